// Smooth marker motion between location fixes.
//
// A marker glides from its displayed position to the new fix over about the time
// between the two fixes, so it keeps moving while the next ping is on its
// way. When a route polyline is known, the glide follows the streets.

const EARTH_RADIUS_M = 6371008.8;
const MIN_GLIDE_MS = 300;
const MAX_GLIDE_MS = 15000;
// A fix farther than this from the route glides in a straight line instead.
const ROUTE_TOLERANCE_M = 60;

const glides = new WeakMap();

/** Return the glide duration in ms for fixes `previousT` and `nextT` (Unix seconds). */
export function glideDurationMs(previousT, nextT) {
  if (!Number.isFinite(previousT) || !Number.isFinite(nextT)) {
    return MIN_GLIDE_MS;
  }
  const durationMs = (nextT - previousT) * 1000;
  return Math.min(MAX_GLIDE_MS, Math.max(MIN_GLIDE_MS, durationMs));
}

/**
 * Move `marker` along `path` ([[lat, lon], ...], starting at the marker) over
 * `durationMs`, cancelling any glide still running on it. `onStep` runs after
 * every frame with the displayed L.LatLng.
 */
export function glideMarker(marker, path, durationMs, onStep = () => {}) {
  stopGlide(marker);
  const lengths = cumulativeLengthsM(path);
  const totalM = lengths[lengths.length - 1];
  const end = L.latLng(path[path.length - 1]);
  if (path.length < 2 || totalM === 0 || durationMs <= 0) {
    marker.setLatLng(end);
    onStep(end);
    return;
  }

  const startMs = performance.now();
  const step = (nowMs) => {
    const progress = Math.min(1, (nowMs - startMs) / durationMs);
    const displayed = L.latLng(pointAtDistance(path, lengths, progress * totalM));
    marker.setLatLng(displayed);
    onStep(displayed);
    if (progress < 1) {
      glides.set(marker, requestAnimationFrame(step));
    } else {
      glides.delete(marker);
    }
  };
  glides.set(marker, requestAnimationFrame(step));
}

/** Cancel the glide running on `marker`, leaving it at its displayed position. */
export function stopGlide(marker) {
  const frame = glides.get(marker);
  if (frame !== undefined) {
    cancelAnimationFrame(frame);
    glides.delete(marker);
  }
}

/**
 * Return the path from `from` to `to` ([lat, lon] pairs) along `route`, or a
 * straight segment when either point lies off the route or `to` lies behind
 * `from` on it.
 */
export function pathBetween(from, to, route) {
  const straight = [from, to];
  if (!Array.isArray(route) || route.length < 2) {
    return straight;
  }
  const start = projectOntoRoute(route, from);
  const end = projectOntoRoute(route, to);
  if (start.distanceM > ROUTE_TOLERANCE_M || end.distanceM > ROUTE_TOLERANCE_M) {
    return straight;
  }
  const startAt = start.index + start.fraction;
  const endAt = end.index + end.fraction;
  if (endAt < startAt) {
    return straight;
  }
  const path = [from, start.point];
  for (let i = start.index + 1; i <= end.index; i += 1) {
    path.push(route[i]);
  }
  path.push(end.point, to);
  return path;
}

/** Return the nearest point of `route` to `point`: {index, fraction, point, distanceM}. */
export function projectOntoRoute(route, point) {
  let best = { index: 0, fraction: 0, point: route[0], distanceM: Infinity };
  for (let i = 0; i < route.length - 1; i += 1) {
    const candidate = projectOntoSegment(route[i], route[i + 1], point);
    if (candidate.distanceM < best.distanceM) {
      best = { index: i, ...candidate };
    }
  }
  return best;
}

function projectOntoSegment(a, b, p) {
  // Local equirectangular metres around `a`: exact enough over one street.
  const cosLat = Math.cos((a[0] * Math.PI) / 180);
  const toXY = (q) => [
    ((q[1] - a[1]) * Math.PI * EARTH_RADIUS_M * cosLat) / 180,
    ((q[0] - a[0]) * Math.PI * EARTH_RADIUS_M) / 180,
  ];
  const [bx, by] = toXY(b);
  const [px, py] = toXY(p);
  const lengthSquared = bx * bx + by * by;
  let fraction = lengthSquared > 0 ? (px * bx + py * by) / lengthSquared : 0;
  fraction = Math.min(1, Math.max(0, fraction));
  const point = [a[0] + (b[0] - a[0]) * fraction, a[1] + (b[1] - a[1]) * fraction];
  const distanceM = Math.hypot(px - bx * fraction, py - by * fraction);
  return { fraction, point, distanceM };
}

/** Return the great-circle distance in metres between two [lat, lon] points. */
export function distanceM(a, b) {
  const lat1 = (a[0] * Math.PI) / 180;
  const lat2 = (b[0] * Math.PI) / 180;
  const dLat = lat2 - lat1;
  const dLon = ((b[1] - a[1]) * Math.PI) / 180;
  const h =
    Math.sin(dLat / 2) ** 2 + Math.cos(lat1) * Math.cos(lat2) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(h)));
}

function cumulativeLengthsM(path) {
  const lengths = [0];
  for (let i = 1; i < path.length; i += 1) {
    lengths.push(lengths[i - 1] + distanceM(path[i - 1], path[i]));
  }
  return lengths;
}

function pointAtDistance(path, lengths, targetM) {
  let i = 1;
  while (i < path.length - 1 && lengths[i] < targetM) {
    i += 1;
  }
  const segmentM = lengths[i] - lengths[i - 1];
  const fraction = segmentM > 0 ? (targetM - lengths[i - 1]) / segmentM : 1;
  const a = path[i - 1];
  const b = path[i];
  return [a[0] + (b[0] - a[0]) * fraction, a[1] + (b[1] - a[1]) * fraction];
}
