// receive-view.js — what this participant wants from the SFU, told with `sfu-view`: the size in
// device pixels of each remote participant's camera tile (0 × 0: not visible) and a cap on the
// total bits/s received (null: none). Each message replaces the previous one on the server.
// Sends once the SFU connection is up, then DEBOUNCE_MS after the last change, and only when the
// view differs from the one sent last. `send(view)` (a promise: the ack) is supplied by its owner.

const DEBOUNCE_MS = 300;

export class ReceiveView {
  /**
   * @param {(view: {tiles: {peerId: string, width: number, height: number}[], maxBitrate: number|null}) => Promise<unknown>} send
   * @param {{tiles?: Map<string, {width: number, height: number}>, maxBitrate?: number|null}} initial
   */
  constructor(send, { tiles = new Map(), maxBitrate = null } = {}) {
    this.send = send;
    this.tiles = tiles;
    this.maxBitrate = maxBitrate;
    this.live = false;
    this.closed = false;
    this.timer = null;
    this.lastSent = null;
  }

  /** peerId → {width, height} of every remote camera tile. */
  setTiles(tiles) {
    this.tiles = tiles;
    this.schedule();
  }

  setMaxBitrate(bps) {
    this.maxBitrate = bps;
    this.schedule();
  }

  /** The SFU connection is up: say what we want now. */
  start() {
    if (this.live || this.closed) return;
    this.live = true;
    this.flush();
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
  }

  schedule() {
    if (!this.live || this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.flush(), DEBOUNCE_MS);
  }

  view() {
    const tiles = [...this.tiles]
      .map(([peerId, { width, height }]) => ({ peerId, width, height }))
      .sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));
    return { tiles, maxBitrate: this.maxBitrate };
  }

  flush() {
    clearTimeout(this.timer);
    if (!this.live || this.closed) return;
    const view = this.view();
    const key = JSON.stringify(view);
    if (key === this.lastSent) return;
    this.lastSent = key;
    Promise.resolve(this.send(view)).catch((err) => {
      if (this.closed) return;
      if (this.lastSent === key) this.lastSent = null; // not taken: the next change sends it again
      console.warn(`sfu-view: ${err.code || ''} ${err.message}`);
    });
  }
}
