/**
 * `deno task keygen`: prints a new `HERD_SECRET` on stdout, 256 random bits from the
 * platform's CSPRNG (`crypto.getRandomValues`) as 43 base64url characters, and nothing
 * else, so that `HERD_SECRET=$(deno task keygen)` works. Give the same secret to every
 * node of a herd.
 *
 * @module
 */

import { newSecret } from "./bus/secret.ts";

if (import.meta.main) console.log(newSecret());
