// Customer tracking page: one job's status, arrival window and, while the
// contractor is on the way or on site, their live position.
//
// The page reads the share token from its path (/track/{token}), draws the
// snapshot from GET /v1/track/{token}, then applies the "update" and
// "event" messages of the WebSocket /v1/track/{token}/ws.

import { createBaseMap, fetchConfig } from "/static/basemap.js";
import { formatAge, formatEta, formatTime, formatTimeRange, shownFlags, statusLabel } from "/static/format.js";
import { glideDurationMs, glideMarker, planGlide, stopGlide } from "/static/motion.js";
import { LiveSocket, socketUrl } from "/static/socket.js";

const CLOSE_POLICY = 1008;
const CLOSE_NOT_FOUND = 4404;
const CLOSE_EXPIRED = 4410;
const STEPS = ["scheduled", "en_route", "arrived", "completed"];
const FIX_AGE_TICK_MS = 1000;
const FRAME_PADDING_PX = 40;
const FRAME_MAX_ZOOM = 17;
const RECONNECTED_NOTE_MS = 4000;

const CUSTOMER_FLAG_LABELS = {
  late: "Running late",
  no_show: "The appointment window has passed",
  stale: "Location updates paused",
};
const TERMINAL_STATUSES = ["completed", "cancelled"];

const LINK_MESSAGES = {
  [CLOSE_NOT_FOUND]:
    "This tracking link was not found. Check that you opened the whole link, " +
    "or ask your contractor for a new one.",
  [CLOSE_EXPIRED]: "This tracking link has expired. Ask your contractor for a new link if you still need one.",
};
const INCOMPLETE_LINK_MESSAGE = "This tracking link is incomplete. Open the whole link from your message.";

// Shared with tests and the browser console: the map, the contractor's
// marker (null while hidden) and the last "update" message applied.
const state = {
  map: null,
  marker: null,
  lastUpdate: null,
  accuracyCircle: null,
  routeLine: null,
  siteLayer: null,
  siteKey: null,
  route: null,
  fix: null,
  arrivedAt: null,
  framed: false,
  userMoved: false,
  unavailable: false,
};
window.enrouteTrack = state;

const ui = {
  address: document.querySelector("[data-testid=address]"),
  arrival: document.querySelector("[data-testid=arrival-window]"),
  detail: document.querySelector("[data-testid=arrival-detail]"),
  appointment: document.querySelector("[data-testid=appointment-window]"),
  flags: document.querySelector("[data-testid=flags]"),
  steps: document.querySelector("[data-testid=status]"),
  fixAge: document.querySelector("[data-testid=fix-age]"),
  connection: document.querySelector("[data-testid=connection]"),
  notice: document.querySelector("[data-testid=notice]"),
  map: document.getElementById("map"),
};

/** Return the share token of a /track/{token} path, or null. */
function tokenFromPath(pathname) {
  const parts = pathname.split("/").filter(Boolean);
  const index = parts.indexOf("track");
  if (index < 0 || index + 1 >= parts.length) {
    return null;
  }
  return decodeURIComponent(parts[index + 1]);
}

class LinkError extends Error {}

async function fetchSnapshot(token) {
  const response = await fetch(`/v1/track/${encodeURIComponent(token)}`);
  if (response.status === 404) {
    throw new LinkError(LINK_MESSAGES[CLOSE_NOT_FOUND]);
  }
  if (response.status === 410) {
    throw new LinkError(LINK_MESSAGES[CLOSE_EXPIRED]);
  }
  if (!response.ok) {
    throw new Error(`GET /v1/track failed with HTTP ${response.status}`);
  }
  return response.json();
}

function showNotice(text, action = null) {
  ui.notice.replaceChildren(document.createTextNode(text));
  if (action !== null) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = action.label;
    button.addEventListener("click", () => {
      ui.notice.hidden = true;
      action.run();
    });
    ui.notice.append(" ", button);
  }
  ui.notice.hidden = false;
}

/**
 * Replace the job's details with `message`, for a link that shows no job:
 * incomplete, not found or expired. Nothing on the page changes after this.
 */
function showUnavailable(message) {
  state.unavailable = true;
  document.body.classList.add("track-unavailable");
  ui.arrival.textContent = "Tracking unavailable";
  document.title = "Tracking unavailable · enroute";
  for (const node of [ui.address, ui.detail, ui.appointment, ui.fixAge, ui.connection]) {
    node.textContent = "";
  }
  ui.flags.hidden = true;
  ui.steps.hidden = true;
  ui.map.hidden = true;
  showNotice(message);
}

// ---- summary panel ----------------------------------------------------

// The window comes from the last fix. Once its end has passed without a
// newer one (no signal, a phone switched off), it promises nothing.
function windowPassed(update) {
  return Boolean(update.arrival_window) && Date.parse(update.arrival_window.latest) < Date.now();
}

function arrivalHeadline(update) {
  switch (update.status) {
    case "en_route":
      if (windowPassed(update)) {
        return "Waiting for an updated arrival time";
      }
      if (update.arrival_window) {
        const { earliest, latest } = update.arrival_window;
        if (formatTime(earliest) === formatTime(latest)) {
          return `Arriving at ${formatTime(earliest)}`;
        }
        return `Arriving ${formatTimeRange(earliest, latest)}`;
      }
      if (Number.isFinite(update.eta_s)) {
        return `Arriving around ${formatTime(Date.now() + update.eta_s * 1000)}`;
      }
      return "On the way";
    case "scheduled":
      if (appointmentPassed(update)) {
        return "The appointment window has passed";
      }
      return `Scheduled ${formatTimeRange(update.window.start, update.window.end)}`;
    case "arrived":
      return state.arrivedAt ? `Arrived at ${formatTime(state.arrivedAt)}` : "Arrived";
    case "completed":
      return "Job completed";
    case "cancelled":
      return "Appointment cancelled";
    default:
      return statusLabel(update.status);
  }
}

function appointmentPassed(update) {
  return Boolean(update.window) && Date.parse(update.window.end) < Date.now();
}

function arrivalDetail(update) {
  if (update.status === "scheduled" && appointmentPassed(update)) {
    return "Waiting for your contractor to set off";
  }
  if (update.status === "completed") {
    return state.arrivedAt ? `Arrived at ${formatTime(state.arrivedAt)}` : "";
  }
  if (update.status !== "en_route" || !Number.isFinite(update.eta_s) || windowPassed(update)) {
    return "";
  }
  return `Travel time ${formatEta(update.eta_s)}`;
}

function renderSummary(update) {
  const headline = arrivalHeadline(update);
  ui.arrival.textContent = headline;
  ui.detail.textContent = arrivalDetail(update);
  document.title = `${headline} · enroute`;
  ui.address.textContent = update.address || "";
  if (update.window) {
    const range = formatTimeRange(update.window.start, update.window.end);
    ui.appointment.textContent = `Appointment window ${range}`;
  }
  renderFlags(customerFlags(update));
  renderSteps(update.status);
}

/**
 * Return the flags shown to the customer, so that no notice contradicts the
 * headline: a passed appointment window outranks "late", and a scheduled job's
 * headline already states that its window has passed.
 */
function customerFlags(update) {
  let flags = shownFlags(update.flags || []);
  if (update.status === "scheduled" && appointmentPassed(update)) {
    flags = flags.filter((flag) => flag !== "no_show");
  }
  return flags;
}

function renderFlags(flags) {
  const items = flags.map((flag) => {
    const item = document.createElement("li");
    item.className = `flag flag-${flag}`;
    item.textContent = CUSTOMER_FLAG_LABELS[flag] || flag;
    return item;
  });
  ui.flags.replaceChildren(...items);
  ui.flags.hidden = items.length === 0;
}

function renderSteps(status) {
  const cancelled = status === "cancelled";
  const current = STEPS.indexOf(status);
  ui.steps.dataset.status = status;
  for (const item of ui.steps.querySelectorAll("li[data-step]")) {
    const step = item.dataset.step;
    const index = STEPS.indexOf(step);
    const isCurrent = step === status;
    item.classList.toggle("done", !cancelled && index >= 0 && index < current);
    item.classList.toggle("current", isCurrent);
    item.classList.toggle("skipped", cancelled && step !== "cancelled");
    if (isCurrent) {
      item.setAttribute("aria-current", "step");
    } else {
      item.removeAttribute("aria-current");
    }
    if (step === "cancelled") {
      item.hidden = !cancelled;
    }
  }
}

function renderFixAge() {
  const update = state.lastUpdate;
  const position = update ? update.position : null;
  if (position) {
    const ageS = Math.max(0, Date.now() / 1000 - position.t);
    ui.fixAge.dataset.ageS = String(Math.floor(ageS));
    ui.fixAge.textContent = `Location updated ${formatAge(ageS)} ago`;
    return;
  }
  delete ui.fixAge.dataset.ageS;
  if (!update || TERMINAL_STATUSES.includes(update.status)) {
    ui.fixAge.textContent = "";
  } else if (update.status === "scheduled") {
    ui.fixAge.textContent = "The location is shown once your contractor is on the way.";
  } else {
    ui.fixAge.textContent = "The location is shown when your contractor is nearby.";
  }
}

// ---- map layers -------------------------------------------------------

function drawSite(site) {
  const key = JSON.stringify(site);
  if (!site || key === state.siteKey) {
    return;
  }
  state.siteKey = key;
  if (state.siteLayer !== null) {
    state.map.removeLayer(state.siteLayer);
  }
  const style = { className: "site-area", interactive: false };
  if (site.type === "Polygon") {
    state.siteLayer = L.geoJSON(site, { style: () => style });
  } else {
    state.siteLayer = L.circle([site.lat, site.lon], { ...style, radius: site.radius_m || 50 });
  }
  state.siteLayer.addTo(state.map);
}

function drawRoute(route) {
  state.route = Array.isArray(route) && route.length >= 2 ? route : null;
  if (state.route === null) {
    if (state.routeLine !== null) {
      state.map.removeLayer(state.routeLine);
      state.routeLine = null;
    }
    return;
  }
  if (state.routeLine === null) {
    state.routeLine = L.polyline(state.route, { className: "route-line", interactive: false });
    state.routeLine.addTo(state.map);
  } else {
    state.routeLine.setLatLngs(state.route);
  }
}

function contractorIcon() {
  return L.divIcon({
    className: "contractor-marker",
    html: '<span class="contractor-dot"></span>',
    iconSize: [22, 22],
    iconAnchor: [11, 11],
  });
}

/** Remove the contractor's marker, accuracy circle and any glide still drawing them. */
function hideContractor() {
  if (state.marker !== null) {
    stopGlide(state.marker);
  }
  for (const name of ["marker", "accuracyCircle"]) {
    if (state[name] !== null) {
      state.map.removeLayer(state[name]);
      state[name] = null;
    }
  }
  state.fix = null;
}

function moveContractor(position, routeBefore) {
  if (!position) {
    hideContractor();
    return;
  }
  const target = [position.lat, position.lon];
  if (state.marker === null) {
    state.marker = L.marker(target, {
      icon: contractorIcon(),
      title: "Your contractor",
      alt: "Your contractor",
      keyboard: false,
      zIndexOffset: 1000,
    }).addTo(state.map);
    state.fix = position;
    updateAccuracy(position, state.marker.getLatLng());
    return;
  }
  if (state.fix !== null && position.t <= state.fix.t) {
    return; // an older or repeated fix
  }
  const marker = state.marker;
  const displayed = marker.getLatLng();
  const path = planGlide([displayed.lat, displayed.lng], position, state.fix, routeBefore);
  const durationMs = glideDurationMs(state.fix ? state.fix.t : NaN, position.t);
  state.fix = position;
  glideMarker(marker, path, durationMs, (latlng) => {
    if (state.marker === marker) {
      updateAccuracy(position, latlng);
    }
  });
}

function updateAccuracy(position, latlng) {
  const radiusM = position.acc;
  if (state.marker === null || !Number.isFinite(radiusM) || radiusM <= 0) {
    if (state.accuracyCircle !== null) {
      state.map.removeLayer(state.accuracyCircle);
      state.accuracyCircle = null;
    }
    return;
  }
  if (state.accuracyCircle === null) {
    state.accuracyCircle = L.circle(latlng, {
      radius: radiusM,
      className: "accuracy-circle",
      interactive: false,
    }).addTo(state.map);
  } else {
    state.accuracyCircle.setLatLng(latlng);
    state.accuracyCircle.setRadius(radiusM);
  }
}

/**
 * Tell Leaflet when the map's container changes size, as it does when the
 * summary panel above it fills in, and frame the map again.
 */
function watchMapSize(map) {
  const observer = new ResizeObserver(() => {
    if (state.unavailable) {
      return; // the map is hidden
    }
    map.invalidateSize({ pan: false });
    state.framed = false;
    frameMap();
  });
  observer.observe(map.getContainer());
}

function markUserMoved() {
  state.userMoved = true;
}

/** Stop framing the map once the user pans or zooms it. */
function watchUserView(map) {
  map.on("dragstart dblclick", markUserMoved);
  map.getContainer().addEventListener("wheel", markUserMoved, { passive: true });
  map.getContainer().addEventListener(
    "touchstart",
    (event) => {
      if (event.touches.length > 1) {
        markUserMoved(); // a pinch zoom
      }
    },
    { passive: true }
  );
  map.zoomControl.getContainer().addEventListener("click", markUserMoved);
}

/** Add a button that frames the site and the contractor again. */
function addRecenterControl(map) {
  const control = L.control({ position: "topright" });
  control.onAdd = () => {
    const button = L.DomUtil.create("button", "recenter-button");
    button.type = "button";
    button.textContent = "Recenter";
    button.setAttribute("aria-label", "Show your contractor and your address");
    L.DomEvent.disableClickPropagation(button);
    button.addEventListener("click", () => {
      state.userMoved = false;
      state.framed = false;
      frameMap();
    });
    return button;
  };
  control.addTo(map);
}

/** Keep the site and the contractor in view until the user pans or zooms the map. */
function frameMap() {
  if (state.userMoved || state.siteLayer === null) {
    return;
  }
  const bounds = state.siteLayer.getBounds();
  if (state.fix !== null) {
    bounds.extend([state.fix.lat, state.fix.lon]);
  }
  const inView = state.map.getBounds().pad(-0.1).contains(bounds);
  if (!state.framed || !inView) {
    state.map.fitBounds(bounds, { padding: [FRAME_PADDING_PX, FRAME_PADDING_PX], maxZoom: FRAME_MAX_ZOOM });
    state.framed = true;
  }
}

// ---- live messages ----------------------------------------------------

function applyUpdate(update) {
  const routeBefore = state.route || update.route;
  state.lastUpdate = update;
  // Servers before arrived_at leave it out, so the time of a live
  // job.arrived event stays until an update carries the field.
  if ("arrived_at" in update) {
    state.arrivedAt = update.arrived_at;
  }
  renderSummary(update);
  drawSite(update.site);
  moveContractor(update.position, routeBefore);
  // The server sends the route only when it changes; the page keeps the
  // last one while the contractor is shown en route.
  if ("route" in update) {
    drawRoute(update.route);
  } else if (update.status !== "en_route" || !update.position) {
    drawRoute(null);
  }
  frameMap();
  renderFixAge();
}

function applyEvent(event) {
  if (event.type === "job.arrived") {
    state.arrivedAt = event.at;
  }
  // The update that follows an event carries the same status. Applying the
  // event's status here as well keeps the steps right if that update is lost.
  if (state.lastUpdate !== null && event.status) {
    state.lastUpdate = { ...state.lastUpdate, status: event.status, flags: event.flags || [] };
    if (TERMINAL_STATUSES.includes(event.status)) {
      state.lastUpdate.position = null;
      hideContractor();
      drawRoute(null);
    }
    renderSummary(state.lastUpdate);
    renderFixAge();
  }
}

function onMessage(message) {
  if (state.unavailable) {
    return;
  }
  if (message.type === "update") {
    applyUpdate(message);
  } else if (message.type === "event" && message.event) {
    applyEvent(message.event);
  }
}

let reconnectedNoteTimer = null;

function onConnectionState(socket, stateName, detail) {
  clearTimeout(reconnectedNoteTimer);
  if (stateName === "open") {
    ui.connection.textContent = detail && detail.reconnected ? "Reconnected" : "";
    reconnectedNoteTimer = setTimeout(() => {
      ui.connection.textContent = "";
    }, RECONNECTED_NOTE_MS);
  } else if (stateName === "retrying") {
    const seconds = Math.max(1, Math.ceil(detail.delayMs / 1000));
    ui.connection.textContent = `Connection lost. Reconnecting in ${seconds} s…`;
  } else if (stateName === "connecting" && ui.connection.textContent.startsWith("Connection lost")) {
    ui.connection.textContent = "Connection lost. Reconnecting…";
  } else if (stateName === "closed") {
    ui.connection.textContent = "";
    if (detail.code === CLOSE_POLICY) {
      showNotice("Live updates stopped because this device could not keep up.", {
        label: "Reconnect",
        run: () => socket.connect(),
      });
    } else if (detail.code in LINK_MESSAGES) {
      showUnavailable(LINK_MESSAGES[detail.code]);
    } else {
      showNotice(`Live updates ended (code ${detail.code}).`);
    }
  }
}

function connect(token) {
  const url = socketUrl(`/v1/track/${encodeURIComponent(token)}/ws`);
  const socket = new LiveSocket(url, {
    onMessage,
    onState: (name, detail) => onConnectionState(socket, name, detail),
    finalCodes: [CLOSE_POLICY, CLOSE_NOT_FOUND, CLOSE_EXPIRED],
  });
  socket.connect();
  return socket;
}

async function main() {
  const token = tokenFromPath(window.location.pathname);
  if (token === null) {
    showUnavailable(INCOMPLETE_LINK_MESSAGE);
    return;
  }
  const snapshotRequest = fetchSnapshot(token);
  snapshotRequest.catch(() => {}); // handled below, after the map exists

  const config = await fetchConfig().catch((error) => {
    console.warn("using default map settings:", error);
    return { tile_url: null, graph_bounds: null };
  });
  state.map = createBaseMap(ui.map, config);
  watchMapSize(state.map);
  watchUserView(state.map);
  addRecenterControl(state.map);

  try {
    applyUpdate(await snapshotRequest);
  } catch (error) {
    if (error instanceof LinkError) {
      showUnavailable(error.message);
      return;
    }
    console.warn("snapshot unavailable, waiting for the live connection:", error);
  }
  connect(token);
  const timer = setInterval(() => {
    if (state.unavailable) {
      clearInterval(timer);
      return;
    }
    renderFixAge();
    // An arrival window can pass between two updates.
    if (state.lastUpdate !== null) {
      renderSummary(state.lastUpdate);
    }
  }, FIX_AGE_TICK_MS);
}

main();
