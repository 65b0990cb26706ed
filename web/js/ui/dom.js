// ui/dom.js — tiny DOM helpers shared by the views: element lookup and creation, formatting of
// durations and dates, attaching a stream to a <video> only when it changed.

export const $ = (sel, root = document) => root.querySelector(sel);

/** el('td', {class: 'x', text: 'hi'}, child…) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') node.textContent = v;
    else if (k === 'class') node.className = v;
    else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

export function duration(secs) {
  if (secs === null || secs === undefined || Number.isNaN(secs)) return '—';
  secs = Math.max(0, Math.round(secs));
  const h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
  const mm = String(m).padStart(h ? 2 : 1, '0'), ss = String(s).padStart(2, '0');
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : d.toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
}

export function setStream(video, stream) {
  if (video.srcObject !== stream) video.srcObject = stream || null;
  if (stream) video.play().catch(() => { /* autoplay may wait for a gesture */ });
}

export function setPressed(button, pressed, labelOn, labelOff) {
  button.setAttribute('aria-pressed', String(pressed));
  const lbl = button.querySelector('.lbl') || button;
  lbl.textContent = pressed ? labelOn : labelOff;
}

export function initials(name) {
  return (name || '?').split(/[\s._@-]+/).filter(Boolean).slice(0, 2).map((p) => p[0].toUpperCase()).join('') || '?';
}
