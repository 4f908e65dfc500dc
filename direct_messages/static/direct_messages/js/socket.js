// A WebSocket that comes back: reconnects with jittered exponential backoff, notices a
// dead connection by its silence (ping/pong), and asks its owner for the URL each
// time, so a conversation can resume with ?after=<last seq it has>.

import { isLeaving } from "./api.js";

const PING_EVERY_MS = 20_000;
const SILENCE_LIMIT_MS = 45_000;
const BACKOFF_FIRST_MS = 400;
const BACKOFF_MAX_MS = 8_000;

// Close codes of PROTOCOL.md after which retrying cannot help.
export const FATAL_CLOSE_CODES = { 4401: "unauthenticated", 4403: "forbidden", 4404: "not_found" };

/** A ws:// or wss:// URL on this host for a path (build the path with config.js's wsPath). */
export function socketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

export class LiveSocket {
  /**
   * @param {() => string} url  called before every connection attempt
   * @param {{onFrame(frame), onStatus(status), onFatal(code)}} handlers
   *   status is "connecting" (first attempt), "open", or "reconnecting"
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.everOpened = false;
    this.opened = 0; // connections opened so far: which one a frame went out on
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastHeard = 0;
    this.status = "connecting";
    this.onOnline = () => this.reconnectNow();
    this.onVisible = () => {
      if (document.visibilityState === "visible") this.checkAlive();
    };
  }

  start() {
    window.addEventListener("online", this.onOnline);
    document.addEventListener("visibilitychange", this.onVisible);
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    document.removeEventListener("visibilitychange", this.onVisible);
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    if (this.ws) this.ws.close(1000);
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Send a frame now; false when the socket is not open (the caller decides what next). */
  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.handlers.onStatus?.(status);
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.attempt = 0;
      this.everOpened = true;
      this.opened += 1;
      this.lastHeard = Date.now();
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.checkAlive(), PING_EVERY_MS);
      this.setStatus("open");
    });
    ws.addEventListener("message", (event) => {
      this.lastHeard = Date.now();
      if (typeof event.data !== "string") return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.handlers.onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return; // an old socket we already replaced
      clearInterval(this.pingTimer);
      this.ws = null;
      const fatal = FATAL_CLOSE_CODES[event.code];
      if (fatal) {
        this.stopped = true;
        this.handlers.onFatal?.(fatal);
        return;
      }
      this.scheduleRetry();
    });
  }

  scheduleRetry() {
    // A page logging out loses its sockets as it goes; one opened again would only be
    // refused (4401), after its owner re-read the page's state with a session now gone.
    if (this.stopped || isLeaving()) return;
    this.setStatus(this.everOpened || this.attempt > 0 ? "reconnecting" : "connecting");
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = base * (0.75 + Math.random() * 0.5);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    if (this.stopped || this.isOpen) return;
    this.attempt = 0;
    if (this.ws && this.ws.readyState === WebSocket.CONNECTING) return;
    this.connect();
  }

  /** Ping; a connection that has been silent too long is dropped and reopened. */
  checkAlive() {
    if (!this.isOpen) return;
    if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
      clearInterval(this.pingTimer);
      this.scheduleRetry();
      return;
    }
    this.send({ type: "ping" });
  }
}
