/**
 * Writes a whole byte array to a writer that may take part of it per call (a TCP
 * connection, a file): the one loop every writer of the node needs.
 *
 * @example
 * ```ts
 * const file = await Deno.open("out.txt", { write: true, create: true });
 * await writeAll(file, new TextEncoder().encode("hello\n"));
 * file.close();
 * ```
 * @module
 */

/** Writes every byte, looping over partial writes. */
export async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  bytes: Uint8Array,
): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await w.write(bytes.subarray(off));
}
