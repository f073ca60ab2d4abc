/**
 * The live view's world map: Natural Earth's land (1:110m, from `npm:world-atlas`) drawn
 * once as one SVG path in an equirectangular projection (x = (lng + 180) * 2,
 * y = (90 - lat) * 2 in a 720 x 360 box), so the page places a client with two additions and
 * needs no map library, no tiles and no network.
 *
 * Built from the npm package when first asked for (about 0.1 s, then cached by the caller):
 * no generated file is committed, and the node reads only its own npm dependencies.
 * The path is ~56 KB (one decimal digit).
 *
 * @module
 */

/** Width and height of the map's coordinate box. */
export const MAP_WIDTH = 720;
export const MAP_HEIGHT = 360;

/** The land as an SVG document. */
export async function worldSvg(): Promise<string> {
  const land = (await import("world-atlas/land-110m.json", {
    with: { type: "json" },
  })).default;
  const { feature } = await import("topojson-client");
  const { geoEquirectangular, geoPath } = await import("d3-geo");
  const projection = geoEquirectangular()
    .scale(MAP_WIDTH / 2 / Math.PI)
    .translate([MAP_WIDTH / 2, MAP_HEIGHT / 2]);
  // deno-lint-ignore no-explicit-any
  const shape = feature(land as any, (land as any).objects.land);
  // deno-lint-ignore no-explicit-any
  const d = geoPath(projection).digits(1)(shape as any) ?? "";
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${MAP_WIDTH} ${MAP_HEIGHT}"><path fill="#233246" stroke="#34495f" stroke-width="0.4" d="${d}"/></svg>`;
}
