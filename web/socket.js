// A JSON WebSocket that reconnects with exponential backoff.

const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30000;
const COUNTDOWN_TICK_MS = 1000;

const utf8 = new TextDecoder();

/** Return the ws: or wss: URL of `path` on this page's host. */
export function socketUrl(path) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}${path}`;
}

/**
 * A live connection to `url`. Each frame, text or binary, is parsed as UTF-8
 * JSON and passed to `onMessage`. `onState(state, detail)` reports "connecting",
 * "open" (detail: {reconnected}, true after a lost connection), "retrying"
 * (detail: {delayMs, code}, repeated every second with the ms left) and
 * "closed" (detail: the CloseEvent). A close whose code is in `finalCodes`
 * ends the connection for good. Any other close is retried after about 1 s,
 * 2 s, 4 s ... (each spread by ±20 %), never more than 30 s.
 */
export class LiveSocket {
  constructor(url, { onMessage, onState = () => {}, finalCodes = [] }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onState = onState;
    this.finalCodes = new Set(finalCodes);
    this.retryMs = FIRST_RETRY_MS;
    this.socket = null;
    this.timer = null;
    this.countdown = null;
    this.stopped = false;
    this.lost = false;
    // A tab woken from sleep or back on the network retries at once.
    window.addEventListener("online", () => this.retryNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") {
        this.retryNow();
      }
    });
  }

  connect() {
    this.stopped = false;
    this.clearTimers();
    this.onState("connecting");
    const socket = new WebSocket(this.url);
    // The server sends some JSON messages as binary frames.
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.onState("open", { reconnected: this.lost });
      this.lost = false;
    });
    socket.addEventListener("message", (event) => this.receive(event));
    socket.addEventListener("close", (event) => this.closed(socket, event));
  }

  /** Close the connection and stop reconnecting. */
  stop() {
    this.stopped = true;
    this.clearTimers();
    if (this.socket !== null) {
      this.socket.close(1000, "page closed the connection");
    }
  }

  /** Reconnect now if a retry is waiting. */
  retryNow() {
    if (this.timer !== null && !this.stopped) {
      this.connect();
    }
  }

  clearTimers() {
    clearTimeout(this.timer);
    clearInterval(this.countdown);
    this.timer = null;
    this.countdown = null;
  }

  receive(event) {
    // A delivered message proves the server is healthy again.
    this.retryMs = FIRST_RETRY_MS;
    const text = typeof event.data === "string" ? event.data : utf8.decode(event.data);
    let message;
    try {
      message = JSON.parse(text);
    } catch (error) {
      console.warn("ignoring a live message that is not JSON:", error);
      return;
    }
    this.onMessage(message);
  }

  closed(socket, event) {
    if (socket !== this.socket || this.stopped) {
      return;
    }
    if (this.finalCodes.has(event.code)) {
      this.onState("closed", event);
      return;
    }
    // Jitter spreads the reconnects of many pages after a server restart,
    // and the cap applies after it.
    const delayMs = Math.min(MAX_RETRY_MS, this.retryMs * (0.8 + 0.4 * Math.random()));
    this.retryMs = Math.min(MAX_RETRY_MS, this.retryMs * 2);
    this.lost = true;
    this.clearTimers();
    const retryAtMs = performance.now() + delayMs;
    this.onState("retrying", { delayMs, code: event.code });
    this.countdown = setInterval(() => {
      const leftMs = Math.max(0, retryAtMs - performance.now());
      this.onState("retrying", { delayMs: leftMs, code: event.code });
    }, COUNTDOWN_TICK_MS);
    this.timer = setTimeout(() => this.connect(), delayMs);
  }
}
