/**
 * The live view's static files (`lib/http/view/`) and the world map, read or built when
 * first asked for and then kept (a few tens of KB per node). Only the names listed here are
 * served, so no request can reach another file.
 *
 * @module
 */

import { worldSvg } from "./world.ts";

/** One file as served. */
export interface Asset {
  body: string;
  type: string;
}

const FILES: Record<string, [string, string]> = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/app.js": ["app.js", "text/javascript; charset=utf-8"],
  "/style.css": ["style.css", "text/css; charset=utf-8"],
};

/** The view's files of one node. */
export class Assets {
  readonly #cache = new Map<string, Promise<Asset>>();

  /** Is `path` one of the view's files? */
  has(path: string): boolean {
    return path in FILES || path === "/world.svg";
  }

  /** The file at `path` (one of `has`). */
  get(path: string): Promise<Asset> {
    let asset = this.#cache.get(path);
    if (asset === undefined) {
      asset = this.#load(path);
      this.#cache.set(path, asset);
      // A failed read is not kept: the next request tries again.
      asset.catch(() => this.#cache.delete(path));
    }
    return asset;
  }

  async #load(path: string): Promise<Asset> {
    if (path === "/world.svg") {
      return { body: await worldSvg(), type: "image/svg+xml" };
    }
    const [file, type] = FILES[path];
    const body = await Deno.readTextFile(
      new URL(`./view/${file}`, import.meta.url),
    );
    return { body, type };
  }
}
