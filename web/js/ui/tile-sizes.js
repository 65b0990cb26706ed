// ui/tile-sizes.js — watches the room grid's remote camera tiles: the size each one is shown at
// in device pixels (CSS size × devicePixelRatio, rounded; 0 × 0 while it is scrolled out of
// sight or not rendered), reported as one Map peerId → {width, height} whenever one changes.

export class TileSizes {
  /** @param {(sizes: Map<string, {width: number, height: number}>) => void} onChange */
  constructor(onChange) {
    this.onChange = onChange;
    this.watched = new Map(); // element -> {peerId, width, height, inSight}
    this.resize = new ResizeObserver((entries) => {
      for (const e of entries) {
        const w = this.watched.get(e.target);
        if (w) { w.width = e.contentRect.width; w.height = e.contentRect.height; }
      }
      this.report();
    });
    this.sight = new IntersectionObserver((entries) => {
      for (const e of entries) {
        const w = this.watched.get(e.target);
        if (w) w.inSight = e.isIntersecting;
      }
      this.report();
    });
  }

  watch(peerId, element) {
    if (this.watched.has(element)) return;
    this.watched.set(element, { peerId, width: 0, height: 0, inSight: true });
    this.resize.observe(element);
    this.sight.observe(element);
  }

  forget(element) {
    if (!this.watched.delete(element)) return;
    this.resize.unobserve(element);
    this.sight.unobserve(element);
    this.report();
  }

  report() {
    const dpr = window.devicePixelRatio || 1;
    const sizes = new Map();
    for (const w of this.watched.values()) {
      sizes.set(w.peerId, w.inSight
        ? { width: Math.round(w.width * dpr), height: Math.round(w.height * dpr) }
        : { width: 0, height: 0 });
    }
    this.onChange(sizes);
  }
}
