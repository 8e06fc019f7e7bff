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
// A glide covers at most this factor times the straight distance to the fix,
// plus the slack below, which allows for a corner but not a loop round a block.
const ROAD_DETOUR_FACTOR = 1.5;
const DETOUR_SLACK_M = 20;
// About 150 km/h: no glide is faster, whatever the fixes' positions imply.
const MAX_SPEED_MPS = 42;

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
 * Return the glide path ([[lat, lon], ...], starting at `from`) from the
 * displayed point `from` ([lat, lon]) towards the new fix `fix` ({lat, lon,
 * t}) that follows `previousFix` (or null), along `route` ([[lat, lon], ...]
 * or null). A path of one point keeps the marker where it is.
 *
 * On the route, the marker moves forward to the point of the route nearest
 * to the fix within its reach, and holds still when the fix lies behind it,
 * so noise neither sends it backwards nor round a block. Off the route, it
 * moves in a straight line, to the fix's projection onto the route when the
 * fix lies near the route. Either way, a glide covers at most
 * `ROAD_DETOUR_FACTOR` times the straight distance (plus slack) and no more
 * than `MAX_SPEED_MPS` allows over the time between the two fixes.
 */
export function planGlide(from, fix, previousFix, route) {
  const to = [fix.lat, fix.lon];
  let reachM = ROAD_DETOUR_FACTOR * distanceM(from, to) + DETOUR_SLACK_M;
  if (previousFix && Number.isFinite(previousFix.t) && Number.isFinite(fix.t)) {
    reachM = Math.min(reachM, MAX_SPEED_MPS * Math.max(0, fix.t - previousFix.t));
  }
  if (!Array.isArray(route) || route.length < 2) {
    return straightPath(from, to, reachM);
  }
  const lengths = cumulativeLengthsM(route);
  const start = nearestOnRoute(route, lengths, from, 0, Infinity);
  const fixOnRoute = nearestOnRoute(route, lengths, to, 0, Infinity);
  if (start.distanceM > ROUTE_TOLERANCE_M) {
    const target = fixOnRoute.distanceM <= ROUTE_TOLERANCE_M ? fixOnRoute.point : to;
    return straightPath(from, target, reachM);
  }
  if (fixOnRoute.distanceM > ROUTE_TOLERANCE_M) {
    return straightPath(from, to, reachM);
  }
  const end = nearestOnRoute(route, lengths, to, start.alongM, start.alongM + reachM);
  if (end.alongM <= start.alongM) {
    return [from];
  }
  return routeSlice(route, lengths, start, end, from);
}

/**
 * Return the point of `route` nearest to `point` among those between
 * `fromM` and `toM` metres along it: {index, point, alongM, distanceM}.
 */
function nearestOnRoute(route, lengths, point, fromM, toM) {
  let best = { index: 0, point: route[0], alongM: 0, distanceM: Infinity };
  for (let i = 0; i < route.length - 1; i += 1) {
    const segmentM = lengths[i + 1] - lengths[i];
    if (lengths[i + 1] < fromM || lengths[i] > toM) {
      continue;
    }
    const low = segmentM > 0 ? Math.max(0, (fromM - lengths[i]) / segmentM) : 0;
    const high = segmentM > 0 ? Math.min(1, (toM - lengths[i]) / segmentM) : 0;
    const candidate = projectOntoSegment(route[i], route[i + 1], point, low, high);
    if (candidate.distanceM < best.distanceM) {
      const alongM = lengths[i] + candidate.fraction * segmentM;
      best = { index: i, point: candidate.point, alongM, distanceM: candidate.distanceM };
    }
  }
  return best;
}

function routeSlice(route, lengths, start, end, from) {
  const path = [from, start.point];
  for (let i = start.index + 1; i <= end.index; i += 1) {
    if (lengths[i] > start.alongM && lengths[i] < end.alongM) {
      path.push(route[i]);
    }
  }
  path.push(end.point);
  return path;
}

function straightPath(from, to, maxM) {
  const totalM = distanceM(from, to);
  if (totalM <= maxM) {
    return [from, to];
  }
  const fraction = maxM / totalM;
  return [from, [from[0] + (to[0] - from[0]) * fraction, from[1] + (to[1] - from[1]) * fraction]];
}

function projectOntoSegment(a, b, p, low = 0, high = 1) {
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
  fraction = Math.min(high, Math.max(low, fraction));
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
