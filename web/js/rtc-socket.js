// rtc-socket.js — the signaling WebSocket (`/rtc?token=…`). Owns the connection: request/ack
// matching by `id`, an application ping to notice a dead link, and automatic reconnect with
// exponential backoff. Every server frame is re-dispatched as an event named by its `type`
// (e.g. 'call-initiate'); 'status' events report connecting / open / reconnecting / closed.

const PING_EVERY_MS = 15000;
const PONG_WITHIN_MS = 10000;
const REQUEST_TIMEOUT_MS = 15000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;

export class SignalingError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'SignalingError';
    this.code = code;
  }
}

export class RtcSocket extends EventTarget {
  constructor(getToken) {
    super();
    this.getToken = getToken;
    this.ws = null;
    this.status = 'closed';
    this.nextId = 1;
    this.pending = new Map();
    this.attempt = 0;
    this.wanted = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.everOpened = false;
  }

  setStatus(status, extra = {}) {
    this.status = status;
    this.dispatchEvent(new CustomEvent('status', { detail: { status, ...extra } }));
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${location.host}/rtc?token=${encodeURIComponent(this.getToken() || '')}`;
  }

  connect() {
    this.wanted = true;
    clearTimeout(this.retryTimer);
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return;
    this.setStatus(this.attempt === 0 ? 'connecting' : 'reconnecting', { attempt: this.attempt });
    let opened = false;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.everOpened = true;
      this.attempt = 0;
      this.startPing();
    };
    ws.onmessage = (e) => this.onFrame(e.data);
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopPing();
      this.failPending('disconnected', 'The connection to the server was lost.');
      if (!this.wanted) {
        this.setStatus('closed');
        return;
      }
      // A refusal before the upgrade (e.g. HTTP 401 for an expired token) never opens:
      // let the app check the token before we keep retrying.
      if (!opened) this.dispatchEvent(new CustomEvent('refused', { detail: { code: e.code } }));
      this.scheduleRetry();
    };
  }

  scheduleRetry() {
    if (!this.wanted) return;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    this.attempt += 1;
    this.setStatus('reconnecting', { attempt: this.attempt, retryInMs: delay });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Reconnect now (e.g. the browser came back online). */
  retryNow() {
    if (!this.wanted || this.ws) return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  close() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    this.stopPing();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, 'bye');
    }
    this.failPending('closed', 'Signed out.');
    this.setStatus('closed');
  }

  startPing() {
    this.stopPing();
    this.pingTimer = setInterval(() => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      this.rawSend({ type: 'ping' });
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => {
        // No pong: the link is dead even if the browser has not noticed yet.
        if (this.ws) this.ws.close(4000, 'no pong');
      }, PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  stopPing() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }

  onFrame(data) {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    if (!msg || typeof msg.type !== 'string') return;
    if (msg.type === 'pong') {
      clearTimeout(this.pongTimer);
      return;
    }
    if ((msg.type === 'ack' || msg.type === 'error') && msg.id !== undefined && this.pending.has(msg.id)) {
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.type === 'ack') p.resolve(msg);
      else p.reject(new SignalingError(msg.code, msg.message));
      return;
    }
    if (msg.type === 'welcome') this.setStatus('open', { welcome: msg });
    this.dispatchEvent(new CustomEvent(msg.type, { detail: msg }));
    this.dispatchEvent(new CustomEvent('message', { detail: msg }));
  }

  rawSend(obj) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  /** Sends a frame without waiting for its ack. Returns false when not connected. */
  send(type, payload = {}) {
    return this.rawSend({ ...payload, type });
  }

  /** Sends a frame with an id and resolves with the ack (rejects with SignalingError). */
  request(type, payload = {}) {
    return new Promise((resolve, reject) => {
      const id = `c${this.nextId++}`;
      if (!this.rawSend({ ...payload, type, id })) {
        reject(new SignalingError('disconnected', 'Not connected to the server right now; try again in a moment.'));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new SignalingError('timeout', 'The server did not answer in time.'));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
    });
  }

  failPending(code, message) {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new SignalingError(code, message));
    }
    this.pending.clear();
  }
}
