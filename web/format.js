// Text formatting shared by the pages: times in the browser's time zone,
// durations, fix ages and job status labels.

export const STATUS_LABELS = {
  scheduled: "Scheduled",
  en_route: "On the way",
  arrived: "Arrived",
  completed: "Completed",
  cancelled: "Cancelled",
};

export const FLAG_LABELS = {
  late: "late",
  no_show: "no show",
  stale: "stale",
};

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "short",
  day: "numeric",
  month: "short",
});

/** Return the label of a job status, or the status itself when unknown. */
export function statusLabel(status) {
  return STATUS_LABELS[status] || String(status || "unknown");
}

/** Return the label of a job flag such as "late". */
export function flagLabel(flag) {
  return FLAG_LABELS[flag] || String(flag);
}

/**
 * Return the job flags worth showing: "no_show" outranks "late", because once
 * the appointment window has passed, a prediction after its end adds nothing.
 */
export function shownFlags(flags) {
  if (!flags.includes("no_show")) {
    return flags;
  }
  return flags.filter((flag) => flag !== "late");
}

/** Format a time (ISO string or Unix milliseconds) as local "14:05". */
export function formatTime(time) {
  return timeFormat.format(new Date(time));
}

/**
 * Format two ISO times as local "14:05–14:15", prefixed with the day in the
 * browser's locale ("Thu 4 Dec, 14:05–14:15" in en-GB) when `start` is not today.
 */
export function formatTimeRange(startIso, endIso, now = new Date()) {
  const start = new Date(startIso);
  const range = `${timeFormat.format(start)}–${timeFormat.format(new Date(endIso))}`;
  return isSameDay(start, now) ? range : `${dayFormat.format(start)}, ${range}`;
}

function isSameDay(a, b) {
  return (
    a.getFullYear() === b.getFullYear() &&
    a.getMonth() === b.getMonth() &&
    a.getDate() === b.getDate()
  );
}

/** Format an age in seconds as "12 s", "3 min" or "2 h". */
export function formatAge(ageS) {
  const seconds = Math.max(0, Math.floor(ageS));
  if (seconds < 60) {
    return `${seconds} s`;
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)} min`;
  }
  return `${Math.floor(seconds / 3600)} h`;
}

/** Format a travel time in seconds as "about 7 min" (at least 1 min). */
export function formatEta(etaS) {
  const minutes = Math.max(1, Math.round(etaS / 60));
  if (minutes < 60) {
    return `about ${minutes} min`;
  }
  const hours = Math.floor(minutes / 60);
  return `about ${hours} h ${minutes % 60} min`;
}

/** Format a distance in metres as "420 m" or "2.4 km". */
export function formatDistance(distanceM) {
  if (distanceM < 1000) {
    return `${Math.round(distanceM)} m`;
  }
  return `${(distanceM / 1000).toFixed(1)} km`;
}

/** Create an element with a class and text content (never parsed as HTML). */
export function element(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text) {
    node.textContent = text;
  }
  return node;
}
