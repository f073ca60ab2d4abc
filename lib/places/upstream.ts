/**
 * What both Google clients share: the context of an upstream call, reading a body with a size
 * bound, parsing a JSON object, scrubbing the key from an answer, and turning a thrown fetch
 * error into a failure answer.
 *
 * @example
 * ```ts
 * import { parseObject } from "./upstream.ts";
 *
 * parseObject('{"status":"OK"}'); // { ok: true, value: { status: "OK" } }
 * parseObject("[]"); // { ok: false, reason: "JSON that is not an object" }
 * ```
 *
 * @module
 */
import {
  failureAnswer,
  type NearbyQuery,
  type PlacesAnswer,
  reasonMessage,
} from "./contract.ts";

/**
 * One upstream call for one query. It should resolve with an answer (success or failure) and
 * stop when `signal` aborts; the cache's limiter also races it against the signal, so an
 * upstream that ignores the signal still cannot hold a caller or a slot past the timeout.
 */
export type UpstreamCall = (
  q: NearbyQuery,
  signal: AbortSignal,
) => Promise<PlacesAnswer>;

/** What an upstream call needs besides the query. */
export interface UpstreamContext {
  url: string;
  apiKey: string | undefined;
  fetch: typeof fetch;
  scrub: (text: string) => string;
}

/** The most bytes of an upstream body read; a Nearby Search answer is tens of KB. */
export const MAX_BODY_BYTES = 4 * 1024 * 1024;

/** A JSON object. */
export type Json = Record<string, unknown>;

/** Whether `value` is a JSON object (not null, not an array). */
export function isRecord(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Parses a body that should be a JSON object; the reason reads after "places upstream sent". */
export function parseObject(
  text: string,
): { ok: true; value: Json } | { ok: false; reason: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, reason: "invalid JSON" };
  }
  return isRecord(value)
    ? { ok: true, value }
    : { ok: false, reason: "JSON that is not an object" };
}

/** Whether an HTTP status is a 2xx. */
export function isHttpOk(status: number): boolean {
  return status >= 200 && status <= 299;
}

/** A non-empty string field of `body`, else undefined. */
export function stringField(body: Json, name: string): string | undefined {
  const value = body[name];
  return typeof value === "string" && value !== "" ? value : undefined;
}

/**
 * Removes the key from the one place an upstream answer could carry it, its
 * `error_message` (success answers never hold it). The body is parsed as received, so a
 * short key that happens to match ordinary text ("K" in "OK") cannot corrupt an answer.
 */
export function scrubAnswer(
  answer: PlacesAnswer,
  scrub: (text: string) => string,
): PlacesAnswer {
  if (typeof answer.error_message !== "string") return answer;
  const message = scrub(answer.error_message);
  return message === answer.error_message
    ? answer
    : { ...answer, error_message: message };
}

/** A thrown fetch or body error as a failure answer; an abort says why it was aborted. */
export function callFailure(
  error: unknown,
  signal: AbortSignal,
  scrub: (text: string) => string,
): PlacesAnswer {
  if (signal.aborted) {
    return failureAnswer("UNKNOWN_ERROR", scrub(reasonMessage(signal.reason)));
  }
  const message = error instanceof BodyTooLargeError
    ? error.message
    : `places upstream could not be reached: ${reasonMessage(error)}`;
  return failureAnswer("UNKNOWN_ERROR", scrub(message));
}

class BodyTooLargeError extends Error {}

/** The body as text, read to the end but never past `maxBytes`, so a runaway upstream cannot fill memory. */
export async function readBody(
  response: Response,
  maxBytes: number,
): Promise<string> {
  if (response.body === null) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      throw new BodyTooLargeError(
        `places upstream sent more than ${maxBytes} bytes`,
      );
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(all);
}
