/**
 * ISO 6709 positions as IAMAT carries them: `+34.068930-118.445127`, latitude then
 * longitude, each with an explicit sign, in decimal degrees.
 *
 * @example
 * ```ts
 * parseLocation("+34-118"); // { lat: "34", lng: "-118", latDeg: 34, lngDeg: -118 }
 * parseLocation("34-118"); // null: the sign is required
 * ```
 * @module
 */

import { compareDecimal, UNSIGNED_DECIMAL } from "./decimal.ts";

/** A parsed position. `lat`/`lng` keep the client's digits (a `+` sign dropped) for upstream use. */
export interface Location {
  lat: string;
  lng: string;
  latDeg: number;
  lngDeg: number;
}

/** Parses `[+-]DD[.ddd][+-]DDD[.ddd]` with latitude in [-90, 90] and longitude in [-180, 180]. */
export function parseLocation(text: string): Location | null {
  if (text.length < 4) return null;
  const first = text.charCodeAt(0);
  if (first !== 43 && first !== 45) return null;
  let split = -1;
  for (let i = 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 43 || c === 45) {
      split = i;
      break;
    }
  }
  if (split < 0) return null;
  const lat = signedDegrees(text.slice(0, split), "90");
  const lng = signedDegrees(text.slice(split), "180");
  if (lat === null || lng === null) return null;
  return { lat, lng, latDeg: Number(lat), lngDeg: Number(lng) };
}

/** `+DD.ddd` within ±limit, exactly; returns the text with a `+` dropped. */
function signedDegrees(text: string, limit: string): string | null {
  const digits = text.slice(1);
  if (!UNSIGNED_DECIMAL.test(digits)) return null;
  if (compareDecimal(digits, limit) > 0) return null;
  return text.charCodeAt(0) === 43 ? digits : text;
}

const EARTH_RADIUS_KM = 6371.0088;

/** Great-circle distance in kilometres (haversine). */
export function distanceKm(
  lat1: number,
  lng1: number,
  lat2: number,
  lng2: number,
): number {
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLng = (lng2 - lng1) * rad;
  const h = Math.sin(dLat / 2) ** 2 +
    Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLng / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(h)));
}
