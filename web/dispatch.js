// Dispatcher fleet page: live contractor markers, an H3 hexagon heatmap,
// the organisation's jobs and the nearest contractors to a clicked point.
//
// The API key comes from the URL fragment (#key=ek_...) or a sign-in form,
// and stays in this tab's sessionStorage. REST calls send it as a bearer
// token; the live WebSocket /v1/fleet/ws takes it as ?token=, because
// browsers cannot set headers on a WebSocket.

import { createBaseMap, fetchConfig } from "/static/basemap.js";
import {
  element,
  flagLabel,
  formatAge,
  formatDistance,
  formatEta,
  formatTime,
  formatTimeRange,
  shownFlags,
  statusLabel,
} from "/static/format.js";
import { glideDurationMs, glideMarker } from "/static/motion.js";
import { LiveSocket, socketUrl } from "/static/socket.js";

const KEY_STORAGE_NAME = "enroute.apiKey";
const CLOSE_UNAUTHORIZED = 4401;
const HEATMAP_REFRESH_MS = 5000;
const JOBS_REFRESH_MS = 30000;
const JOBS_RELOAD_DELAY_MS = 300;
const MARKER_AGE_TICK_MS = 10000;
// A marker whose last fix is older than this is drawn faded.
const OLD_FIX_S = 300;
const NEARBY_LIMIT = 5;
const MAX_EVENTS_SHOWN = 20;
const CLOSED_STATUSES = ["completed", "cancelled"];
// Completed and cancelled jobs stay listed this long after the event that
// closed them. The page reads the event stream this far back on start.
const CLOSED_JOBS_KEPT_MS = 12 * 3600 * 1000;
const EVENT_PAGE_LIMIT = 1000;
const MAX_EVENT_PAGES = 10;
// Heatmap classes: lower bound of each class's contractor count.
const HEAT_CLASS_MINIMUMS = [1, 2, 4, 8, 16, 32];
const HEAT_COLOURS = ["#fde0c5", "#facba6", "#f8b58b", "#f59e72", "#ef6a4c", "#c4372b"];
const STATUS_ORDER = ["en_route", "arrived", "scheduled", "completed", "cancelled"];
const FLAG_ORDER = ["no_show", "late", "stale"];
// Orders "f-c2" before "f-c10".
const naturalOrder = new Intl.Collator(undefined, { numeric: true });

class AuthError extends Error {}

// Shared with tests and the browser console.
const state = {
  key: null,
  map: null,
  markers: new Map(), // contractor id -> L.Marker
  contractors: new Map(), // contractor id -> {fix, jobId, status}
  hexLayer: null,
  nearbyLayer: null,
  sitesLayer: null,
  sites: new Map(), // job id -> site layer
  jobs: new Map(), // job id -> job as GET /v1/jobs returns it
  socket: null,
  timers: [],
  heatmapBusy: false,
  heatmapAgain: false,
  errors: new Map(), // topic ("fleet", "jobs", "nearby") -> message shown
  nearbyRequest: 0,
  jobsReload: null,
  reconnecting: false,
};
window.enrouteDispatch = state;

const ui = {
  map: document.getElementById("map"),
  connection: document.querySelector("[data-testid=connection]"),
  notice: document.querySelector("[data-testid=notice]"),
  keyForm: document.querySelector("[data-testid=key-form]"),
  keyInput: document.getElementById("api-key"),
  keyError: document.querySelector("[data-testid=key-error]"),
  forgetKey: document.getElementById("forget-key"),
  heatRes: document.getElementById("heat-res"),
  heatStatus: document.getElementById("heat-status"),
  heatShow: document.getElementById("heat-show"),
  hexCount: document.querySelector("[data-testid=hex-count]"),
  heatError: document.querySelector("[data-testid=heat-error]"),
  legend: document.querySelector("[data-testid=heat-legend]"),
  jobList: document.querySelector("[data-testid=job-list]"),
  jobCount: document.querySelector("[data-testid=job-count]"),
  nearby: document.querySelector("[data-testid=nearby]"),
  events: document.querySelector("[data-testid=events]"),
};

// ---- API key and REST -------------------------------------------------

function keyFromFragment() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  return params.get("key");
}

/** Return the key from the URL fragment or this tab's storage, or null. */
function loadKey() {
  const fromFragment = keyFromFragment();
  if (fromFragment) {
    sessionStorage.setItem(KEY_STORAGE_NAME, fromFragment);
    // Drop the key from the address bar and the history entry.
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
    return fromFragment;
  }
  return sessionStorage.getItem(KEY_STORAGE_NAME);
}

async function apiGet(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.key}` } });
  if (response.status === 401 || response.status === 403) {
    throw new AuthError(`the API key was rejected (HTTP ${response.status})`);
  }
  if (!response.ok) {
    let detail = "";
    try {
      detail = (await response.json()).detail || "";
    } catch (error) {
      // The body is not JSON, so the message gives the HTTP status alone.
    }
    throw new Error(`GET ${path} failed with HTTP ${response.status}${detail ? `: ${detail}` : ""}`);
  }
  return response.json();
}

function askForKey(message = "") {
  ui.keyError.textContent = message;
  ui.keyForm.hidden = false;
  ui.keyInput.focus();
}

/** Stop the live feed, forget the key and clear what the page showed with it. */
function signOut() {
  stopLive();
  sessionStorage.removeItem(KEY_STORAGE_NAME);
  state.key = null;
  for (const contractorId of [...state.markers.keys()]) {
    removeContractor(contractorId);
  }
  state.jobs = new Map();
  renderJobs();
  ui.events.replaceChildren();
  drawHexes([]);
  state.errors.clear();
  showNotice("");
  state.nearbyLayer.clearLayers();
  ui.nearby.replaceChildren(element("p", "hint", "Click the map to list the nearest contractors."));
  ui.connection.textContent = "Signed out";
  delete ui.connection.dataset.state;
}

function rejectKey(error) {
  signOut();
  askForKey(`Sign-in failed: ${error.message}. Enter a valid API key.`);
}

/**
 * Report a failed request about `topic` until a request about it succeeds.
 * An authentication failure clears the key and shows the sign-in form.
 */
function reportError(error, where, topic) {
  if (error instanceof AuthError) {
    rejectKey(error);
    return;
  }
  console.warn(`${where} failed:`, error);
  state.errors.set(topic, `${where} failed: ${error.message}`);
  showNotice([...state.errors.values()].join(" "));
}

/** Withdraw the error about `topic`, because a request about it succeeded. */
function clearError(topic) {
  if (state.errors.delete(topic)) {
    showNotice([...state.errors.values()].join(" "));
  }
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = !text;
}

// ---- contractor markers -----------------------------------------------

function markerIcon(status) {
  return L.divIcon({
    className: `fleet-marker status-${status || "idle"}`,
    html: '<span class="fleet-dot"></span>',
    iconSize: [18, 18],
    iconAnchor: [9, 9],
  });
}

function tooltipFor(contractorId) {
  const info = state.contractors.get(contractorId);
  const box = element("div", "fleet-tooltip");
  box.append(element("strong", "", contractorId));
  if (!info) {
    return box;
  }
  const job = info.jobId ? `${info.jobId}, ${statusLabel(info.status)}` : "no job";
  box.append(element("div", "", job));
  box.append(element("div", "", `fix ${formatAge(Date.now() / 1000 - info.fix.t)} ago`));
  return box;
}

function setContractorStatus(contractorId, jobId, status) {
  const info = state.contractors.get(contractorId);
  const marker = state.markers.get(contractorId);
  if (!info || !marker) {
    return;
  }
  if (info.jobId && jobId !== info.jobId && !["completed", "cancelled"].includes(info.status)) {
    return; // the marker shows the contractor's other, open job
  }
  info.jobId = jobId;
  info.status = status;
  marker.setIcon(markerIcon(status));
  markOldFix(contractorId);
}

/** Move a contractor's marker to `fix`, gliding from its displayed position when `glide` is set. */
function placeContractor(contractorId, fix, glide) {
  const info = state.contractors.get(contractorId);
  const marker = state.markers.get(contractorId);
  if (!info || !marker) {
    const created = L.marker([fix.lat, fix.lon], {
      icon: markerIcon(null),
      title: `Contractor ${contractorId}`,
      alt: `Contractor ${contractorId}`,
      keyboard: false,
    });
    created.bindTooltip(() => tooltipFor(contractorId), { direction: "top", offset: [0, -8] });
    created.addTo(state.map);
    state.markers.set(contractorId, created);
    state.contractors.set(contractorId, { fix, jobId: null, status: null });
    return;
  }
  if (fix.t <= info.fix.t) {
    return; // an older or repeated fix
  }
  const durationMs = glide ? glideDurationMs(info.fix.t, fix.t) : 0;
  info.fix = fix;
  const displayed = marker.getLatLng();
  glideMarker(marker, [[displayed.lat, displayed.lng], [fix.lat, fix.lon]], durationMs);
  markOldFix(contractorId);
}

function markOldFix(contractorId) {
  const info = state.contractors.get(contractorId);
  const node = state.markers.get(contractorId)?.getElement();
  if (info && node) {
    node.classList.toggle("fix-old", Date.now() / 1000 - info.fix.t > OLD_FIX_S);
  }
}

function removeContractor(contractorId) {
  const marker = state.markers.get(contractorId);
  if (marker) {
    state.map.removeLayer(marker);
  }
  state.markers.delete(contractorId);
  state.contractors.delete(contractorId);
}

async function loadFleet() {
  const key = state.key;
  const fleet = await apiGet("/v1/fleet");
  if (state.key !== key) {
    return; // signed out while the request ran
  }
  const seen = new Set();
  for (const feature of fleet.features) {
    const [lon, lat] = feature.geometry.coordinates;
    const props = feature.properties;
    const fix = { t: props.t, lat, lon, acc: props.acc, spd: props.spd, hdg: props.hdg };
    seen.add(props.contractor_id);
    placeContractor(props.contractor_id, fix, false);
    const info = state.contractors.get(props.contractor_id);
    info.jobId = props.job_id;
    info.status = props.status;
    state.markers.get(props.contractor_id).setIcon(markerIcon(props.status));
    markOldFix(props.contractor_id);
  }
  for (const contractorId of [...state.markers.keys()]) {
    if (!seen.has(contractorId)) {
      removeContractor(contractorId);
    }
  }
  clearError("fleet");
}

// ---- heatmap ----------------------------------------------------------

function heatClass(count) {
  let index = 0;
  while (index + 1 < HEAT_CLASS_MINIMUMS.length && count >= HEAT_CLASS_MINIMUMS[index + 1]) {
    index += 1;
  }
  return index;
}

function renderLegend() {
  const items = HEAT_CLASS_MINIMUMS.map((minimum, index) => {
    const next = HEAT_CLASS_MINIMUMS[index + 1];
    let range = `${minimum}+`;
    if (next !== undefined) {
      range = next - 1 === minimum ? String(minimum) : `${minimum}–${next - 1}`;
    }
    const item = element("li");
    const swatch = element("span", "swatch");
    swatch.style.background = HEAT_COLOURS[index];
    item.append(swatch, element("span", "", range));
    return item;
  });
  ui.legend.replaceChildren(...items);
}

function drawHexes(cells) {
  state.hexLayer.clearLayers();
  let contractors = 0;
  for (const cell of cells) {
    contractors += cell.count;
    const polygon = L.polygon(h3.cellToBoundary(cell.h3), {
      className: "hex",
      color: "#a33a2a",
      weight: 1,
      fillColor: HEAT_COLOURS[heatClass(cell.count)],
      fillOpacity: 0.6,
    });
    const noun = cell.count === 1 ? "contractor" : "contractors";
    polygon.bindTooltip(element("span", "", `${cell.count} ${noun}`), { sticky: true });
    state.hexLayer.addLayer(polygon);
  }
  ui.hexCount.dataset.count = String(cells.length);
  delete ui.hexCount.dataset.unavailable;
  const cellNoun = cells.length === 1 ? "cell" : "cells";
  ui.hexCount.textContent = `${cells.length} ${cellNoun}, ${contractors} contractors`;
}

/** Clear the hexagons and show that there are no counts, rather than zero of them. */
function showHeatmapUnavailable() {
  drawHexes([]);
  delete ui.hexCount.dataset.count;
  ui.hexCount.dataset.unavailable = "true";
  ui.hexCount.textContent = "Heatmap data unavailable";
}

function heatmapQuery() {
  const params = new URLSearchParams({ res: ui.heatRes.value, format: "cells" });
  if (ui.heatStatus.value) {
    params.set("status", ui.heatStatus.value);
  }
  return params.toString();
}

async function refreshHeatmap() {
  if (state.key === null) {
    return;
  }
  if (state.heatmapBusy) {
    state.heatmapAgain = true; // the controls changed while a request ran
    return;
  }
  state.heatmapBusy = true;
  state.heatmapAgain = false;
  const key = state.key;
  const query = heatmapQuery();
  try {
    const body = await apiGet(`/v1/fleet/heatmap?${query}`);
    if (state.key === key && query === heatmapQuery()) {
      drawHexes(body.cells);
      ui.heatError.textContent = "";
    }
  } catch (error) {
    if (error instanceof AuthError) {
      rejectKey(error);
    } else {
      showHeatmapUnavailable();
      ui.heatError.textContent = `Heatmap request failed: ${error.message}`;
    }
  } finally {
    state.heatmapBusy = false;
  }
  if (state.heatmapAgain) {
    refreshHeatmap();
  }
}

function showHexes(visible) {
  if (visible) {
    state.hexLayer.addTo(state.map);
  } else {
    state.map.removeLayer(state.hexLayer);
  }
}

// ---- jobs -------------------------------------------------------------

/** Return "arriving 14:05–14:15", "arriving at 14:05", or that the window has passed. */
function arrivalText(arrivalWindow) {
  const { earliest, latest } = arrivalWindow;
  // The window comes from the last fix, so once it ends it promises nothing.
  if (Date.parse(latest) < Date.now()) {
    return "waiting for an updated arrival time";
  }
  if (formatTime(earliest) === formatTime(latest)) {
    return `arriving at ${formatTime(earliest)}`;
  }
  return `arriving ${formatTimeRange(earliest, latest)}`;
}

function jobSummary(job) {
  const parts = [job.contractor_id];
  if (job.status === "en_route" && job.arrival_window) {
    parts.push(arrivalText(job.arrival_window));
  } else if (job.status === "en_route" && Number.isFinite(job.eta_s)) {
    parts.push(`ETA ${formatEta(job.eta_s)}`);
  }
  if (job.window) {
    parts.push(`window ${formatTimeRange(job.window.start, job.window.end)}`);
  }
  if (CLOSED_STATUSES.includes(job.status) && Number.isFinite(job.closedAtMs)) {
    parts.push(`${job.status} ${formatTime(job.closedAtMs)}`);
  }
  return parts.join(" · ");
}

function jobItem(job) {
  const item = element("li", `job status-${job.status}`);
  item.dataset.jobId = job.id;
  item.dataset.status = job.status;
  const button = element("button", "job-focus");
  button.type = "button";
  button.setAttribute("aria-label", `Show job ${job.id} on the map`);
  button.append(element("span", "job-id", job.id));
  button.append(element("span", `job-status status-${job.status}`, statusLabel(job.status)));
  for (const flag of shownFlags(job.flags || [])) {
    const badge = element("span", `flag flag-${flag}`, flagLabel(flag));
    badge.dataset.flag = flag;
    button.append(badge);
  }
  button.addEventListener("click", () => focusJob(job.id));
  item.append(button, element("span", "job-meta", jobSummary(job)));
  return item;
}

function flagRank(job) {
  const ranks = (job.flags || []).map((flag) => FLAG_ORDER.indexOf(flag)).filter((rank) => rank >= 0);
  return ranks.length > 0 ? Math.min(...ranks) : FLAG_ORDER.length;
}

function windowStartMs(job) {
  const startMs = job.window ? Date.parse(job.window.start) : NaN;
  return Number.isFinite(startMs) ? startMs : Infinity;
}

/** Order jobs by status, then flagged first, then by window start, then by id in natural order. */
function compareJobs(a, b) {
  const byStatus = STATUS_ORDER.indexOf(a.status) - STATUS_ORDER.indexOf(b.status);
  if (byStatus !== 0) {
    return byStatus;
  }
  const byFlag = flagRank(a) - flagRank(b);
  if (byFlag !== 0) {
    return byFlag;
  }
  const aStartMs = windowStartMs(a);
  const bStartMs = windowStartMs(b);
  if (aStartMs !== bStartMs) {
    return aStartMs < bStartMs ? -1 : 1;
  }
  return naturalOrder.compare(a.id, b.id);
}

let jobsRenderPending = false;

/** Render the job list once per animation frame, however many messages arrive. */
function renderJobsSoon() {
  if (jobsRenderPending) {
    return;
  }
  jobsRenderPending = true;
  requestAnimationFrame(() => {
    jobsRenderPending = false;
    renderJobs();
  });
}

/** Return whether the list shows `job`: open, or closed less than CLOSED_JOBS_KEPT_MS ago. */
function isListed(job, nowMs) {
  if (!CLOSED_STATUSES.includes(job.status)) {
    return true;
  }
  return Number.isFinite(job.closedAtMs) && nowMs - job.closedAtMs < CLOSED_JOBS_KEPT_MS;
}

function renderJobs() {
  const nowMs = Date.now();
  const jobs = [...state.jobs.values()].filter((job) => isListed(job, nowMs)).sort(compareJobs);
  if (jobs.length === 0) {
    ui.jobList.replaceChildren(element("li", "empty", "No open jobs, and none closed in the last 12 hours."));
  } else {
    ui.jobList.replaceChildren(...jobs.map(jobItem));
  }
  ui.jobCount.textContent = `(${jobs.length})`;
  syncSites(jobs);
}

function siteLayer(job) {
  const style = { className: `site-area status-${job.status}`, interactive: false };
  if (job.site.type === "Polygon") {
    return L.geoJSON(job.site, { style: () => style });
  }
  return L.circle([job.site.lat, job.site.lon], { ...style, radius: job.site.radius_m || 50 });
}

function syncSites(jobs) {
  const open = new Set();
  for (const job of jobs) {
    if (!job.site || ["completed", "cancelled"].includes(job.status)) {
      continue;
    }
    open.add(job.id);
    if (!state.sites.has(job.id)) {
      const layer = siteLayer(job);
      state.sites.set(job.id, layer);
      state.sitesLayer.addLayer(layer);
    }
  }
  for (const [jobId, layer] of state.sites) {
    if (!open.has(jobId)) {
      state.sitesLayer.removeLayer(layer);
      state.sites.delete(jobId);
    }
  }
}

function focusJob(jobId) {
  const job = state.jobs.get(jobId);
  if (!job) {
    return;
  }
  const marker = state.markers.get(job.contractor_id);
  const site = state.sites.get(jobId);
  const bounds = L.latLngBounds([]);
  if (marker) {
    bounds.extend(marker.getLatLng());
  }
  if (site) {
    bounds.extend(site.getBounds());
  }
  if (bounds.isValid()) {
    state.map.fitBounds(bounds, { padding: [60, 60], maxZoom: 17 });
  }
  if (marker) {
    marker.openTooltip();
  }
}

async function loadJobs() {
  const key = state.key;
  const body = await apiGet("/v1/jobs");
  if (state.key !== key) {
    return; // signed out while the request ran
  }
  // GET /v1/jobs lists open jobs only, and carries no closing time, so
  // closed jobs come from the events that closed them. A job closed by an
  // event that arrived while this request ran stays closed, because
  // completed and cancelled are final.
  const fresh = new Map(body.jobs.map((job) => [job.id, job]));
  for (const [jobId, job] of state.jobs) {
    if (CLOSED_STATUSES.includes(job.status) && isListed(job, Date.now())) {
      fresh.set(jobId, job);
    }
  }
  state.jobs = fresh;
  renderJobsSoon();
  clearError("jobs");
}

/** Reload the job list shortly, once for a burst of events about unknown jobs. */
function reloadJobsSoon() {
  if (state.jobsReload !== null) {
    return;
  }
  state.jobsReload = setTimeout(() => {
    state.jobsReload = null;
    loadJobs().catch((error) => reportError(error, "Loading jobs", "jobs"));
  }, JOBS_RELOAD_DELAY_MS);
}

// ---- live messages ----------------------------------------------------

function applyJob(update) {
  // Live job messages carry only the fields an ETA refresh changes, so
  // they are merged into the job the list loaded.
  const known = state.jobs.get(update.id);
  if (known === undefined) {
    reloadJobsSoon();
    return;
  }
  const job = { ...known, ...update };
  state.jobs.set(job.id, job);
  setContractorStatus(job.contractor_id, job.id, job.status);
  renderJobsSoon();
}

/** Record that `event` closed its job, adding the job from the event when the list lacks it. */
function closeJob(event) {
  const atMs = event.at ? Date.parse(event.at) : NaN;
  const known = state.jobs.get(event.job_id) || {
    id: event.job_id,
    contractor_id: event.contractor_id,
    window: null,
  };
  state.jobs.set(event.job_id, {
    ...known,
    status: event.status,
    flags: event.flags || [],
    closedAtMs: Number.isFinite(atMs) ? atMs : Date.now(),
  });
  renderJobsSoon();
}

function applyEvent(event, eventId) {
  const job = state.jobs.get(event.job_id);
  if (CLOSED_STATUSES.includes(event.status)) {
    closeJob(event);
  } else if (job) {
    job.status = event.status;
    job.flags = event.flags || [];
    renderJobsSoon();
  } else {
    reloadJobsSoon();
  }
  if (event.contractor_id) {
    setContractorStatus(event.contractor_id, event.job_id, event.status);
  }
  logEvent(event, eventId);
}

/**
 * Load the events of the last CLOSED_JOBS_KEPT_MS: the newest go to the
 * event list, and those that closed a job add it to the job list.
 */
async function loadRecentEvents() {
  const key = state.key;
  // The first page starts at a time, and the next ones after its cursor.
  const since = new Date(Date.now() - CLOSED_JOBS_KEPT_MS).toISOString();
  let query = `since=${encodeURIComponent(since)}&limit=${EVENT_PAGE_LIMIT}`;
  const events = [];
  for (let page = 0; page < MAX_EVENT_PAGES; page += 1) {
    const body = await apiGet(`/v1/events?${query}`);
    if (state.key !== key) {
      return; // signed out while the request ran
    }
    events.push(...body.events);
    query = `after=${encodeURIComponent(body.cursor)}&limit=${EVENT_PAGE_LIMIT}`;
    if (body.events.length < EVENT_PAGE_LIMIT) {
      break;
    }
    if (page === MAX_EVENT_PAGES - 1) {
      // NOTE: the newest events and closed jobs past this cap appear only
      // as live messages bring them.
      console.warn(`loaded the first ${events.length} events of the last ${CLOSED_JOBS_KEPT_MS / 3600000} h only`);
    }
  }
  for (const event of events) {
    if (CLOSED_STATUSES.includes(event.status)) {
      closeJob(event);
    }
  }
  for (const event of events.slice(-MAX_EVENTS_SHOWN)) {
    logEvent(event, event.id);
  }
  clearError("events");
}

/**
 * Insert `event` into the list, which stays ordered newest first by event
 * time. An event whose stream id `eventId` is listed already is skipped.
 */
function logEvent(event, eventId) {
  if (eventId && [...ui.events.children].some((other) => other.dataset.eventId === eventId)) {
    return;
  }
  const atMs = event.at ? Date.parse(event.at) : NaN;
  const time = Number.isFinite(atMs) ? formatTime(atMs) : "";
  const kind = String(event.type || "event").replace(/^job\./, "");
  const cause = event.cause ? ` (${event.cause})` : "";
  const item = element("li", `event event-${kind}`, `${time} ${event.job_id || ""} ${kind}${cause}`);
  // An event without a time sorts as just received.
  const sortMs = Number.isFinite(atMs) ? atMs : Date.now();
  item.dataset.atMs = String(sortMs);
  if (eventId) {
    item.dataset.eventId = eventId;
  }
  const older = [...ui.events.children].find((other) => Number(other.dataset.atMs) < sortMs);
  ui.events.insertBefore(item, older || null);
  while (ui.events.children.length > MAX_EVENTS_SHOWN) {
    ui.events.lastElementChild.remove();
  }
}

function onMessage(message) {
  if (message.type === "position") {
    placeContractor(message.contractor_id, message.fix, true);
  } else if (message.type === "job" && message.job) {
    applyJob(message.job);
  } else if (message.type === "event" && message.event) {
    applyEvent(message.event, message.id);
  }
}

function onConnectionState(stateName, detail) {
  if (stateName === "open") {
    ui.connection.textContent = "Live";
    ui.connection.dataset.state = "live";
    if (state.reconnecting) {
      // Catch up on what happened while the connection was down.
      state.reconnecting = false;
      loadFleet().catch((error) => reportError(error, "Reloading the fleet", "fleet"));
      loadJobs().catch((error) => reportError(error, "Reloading jobs", "jobs"));
      loadRecentEvents().catch((error) => reportError(error, "Reloading events", "events"));
    }
  } else if (stateName === "connecting") {
    ui.connection.textContent = "Connecting…";
    ui.connection.dataset.state = "connecting";
  } else if (stateName === "retrying") {
    state.reconnecting = true;
    ui.connection.dataset.state = "retrying";
    ui.connection.textContent = `Reconnecting in ${Math.ceil(detail.delayMs / 1000)} s`;
  } else if (stateName === "closed" && detail.code === CLOSE_UNAUTHORIZED) {
    rejectKey(new AuthError("the live connection rejected the API key"));
  }
}

function stopLive() {
  if (state.socket !== null) {
    state.socket.stop();
    state.socket = null;
  }
  for (const timer of state.timers) {
    clearInterval(timer);
  }
  state.timers = [];
}

/** Load the fleet and jobs with `key`, then follow the live feed. */
async function begin(key) {
  state.key = key;
  ui.keyForm.hidden = true;
  ui.connection.textContent = "Loading…";
  const results = await Promise.allSettled([loadFleet(), loadJobs(), loadRecentEvents()]);
  for (const [result, where, topic] of [
    [results[0], "Loading the fleet", "fleet"],
    [results[1], "Loading jobs", "jobs"],
    [results[2], "Loading events", "events"],
  ]) {
    if (result.status === "rejected") {
      reportError(result.reason, where, topic);
      if (result.reason instanceof AuthError) {
        return;
      }
    }
  }
  const url = socketUrl(`/v1/fleet/ws?token=${encodeURIComponent(key)}`);
  state.socket = new LiveSocket(url, {
    onMessage,
    onState: onConnectionState,
    finalCodes: [CLOSE_UNAUTHORIZED],
  });
  state.socket.connect();
  refreshHeatmap();
  state.timers.push(setInterval(refreshHeatmap, HEATMAP_REFRESH_MS));
  state.timers.push(
    setInterval(() => loadJobs().catch((error) => reportError(error, "Loading jobs", "jobs")), JOBS_REFRESH_MS)
  );
}

// ---- nearby search ----------------------------------------------------

function nearbyItem(origin, contractor) {
  const item = element("li", "nearby-item");
  const button = element("button", "nearby-focus", contractor.contractor_id);
  button.type = "button";
  button.setAttribute("aria-label", `Show contractor ${contractor.contractor_id} on the map`);
  button.addEventListener("click", () => state.map.panTo([contractor.lat, contractor.lon]));
  const eta = Number.isFinite(contractor.eta_s) ? `ETA ${formatEta(contractor.eta_s)}` : "no route";
  const meta = `${formatDistance(contractor.distance_m)} · ${eta}`;
  item.append(button, element("span", "nearby-meta", meta));
  L.polyline([origin, [contractor.lat, contractor.lon]], {
    className: "nearby-line",
    interactive: false,
  }).addTo(state.nearbyLayer);
  return item;
}

async function showNearby(latlng) {
  if (state.key === null) {
    return;
  }
  const point = latlng.wrap();
  const request = ++state.nearbyRequest;
  state.nearbyLayer.clearLayers();
  L.circleMarker(point, { radius: 6, className: "nearby-origin", interactive: false }).addTo(
    state.nearbyLayer
  );
  ui.nearby.replaceChildren(element("p", "hint", "Searching…"));

  const query = `lat=${point.lat.toFixed(6)}&lon=${point.lng.toFixed(6)}&limit=${NEARBY_LIMIT}`;
  let body;
  try {
    body = await apiGet(`/v1/fleet/nearby?${query}`);
  } catch (error) {
    if (request === state.nearbyRequest) {
      ui.nearby.replaceChildren(element("p", "error", `Search failed: ${error.message}`));
    }
    reportError(error, "Nearby search", "nearby");
    return;
  }
  clearError("nearby");
  if (request !== state.nearbyRequest) {
    return; // a later click replaced this search
  }
  const origin = [point.lat, point.lng];
  const heading = element("p", "nearby-origin-text", `Nearest to ${origin[0].toFixed(5)}, ${origin[1].toFixed(5)}`);
  if (body.contractors.length === 0) {
    ui.nearby.replaceChildren(heading, element("p", "hint", "No contractor has a position."));
    return;
  }
  const list = element("ol", "nearby-list");
  list.append(...body.contractors.map((contractor) => nearbyItem(origin, contractor)));
  ui.nearby.replaceChildren(heading, list);
}

// ---- start ------------------------------------------------------------

function wireControls() {
  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) {
      ui.keyError.textContent = "Enter the organisation's API key.";
      return;
    }
    sessionStorage.setItem(KEY_STORAGE_NAME, key);
    ui.keyInput.value = "";
    begin(key);
  });
  ui.forgetKey.addEventListener("click", () => {
    signOut();
    askForKey();
  });
  ui.heatRes.addEventListener("change", refreshHeatmap);
  ui.heatStatus.addEventListener("change", refreshHeatmap);
  ui.heatShow.addEventListener("change", () => showHexes(ui.heatShow.checked));
  state.map.on("click", (event) => showNearby(event.latlng));
}

async function main() {
  const config = await fetchConfig().catch((error) => {
    console.warn("using default map settings:", error);
    return { tile_url: null, graph_bounds: null };
  });
  state.map = createBaseMap(ui.map, config);
  state.sitesLayer = L.layerGroup().addTo(state.map);
  state.hexLayer = L.featureGroup().addTo(state.map);
  state.nearbyLayer = L.layerGroup().addTo(state.map);
  renderLegend();
  wireControls();
  setInterval(() => {
    state.markers.forEach((_, id) => markOldFix(id));
    renderJobsSoon(); // arrival windows pass between messages
  }, MARKER_AGE_TICK_MS);

  const key = loadKey();
  if (key) {
    begin(key);
  } else {
    ui.connection.textContent = "Signed out";
    askForKey();
  }
}

main();
