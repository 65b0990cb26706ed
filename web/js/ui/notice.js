// ui/notice.js — short messages to the user in the corner (announced by screen readers via the
// aria-live container): errors, confirmations, connection changes. Errors stay until closed.

import { el } from './dom.js';

const box = () => document.getElementById('notices');

export function notify(text, kind = 'info', { key, timeoutMs } = {}) {
  const container = box();
  if (key) container.querySelector(`[data-key="${key}"]`)?.remove();
  const node = el('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : null, 'data-testid': 'notice', dataset: { key: key || '', kind } },
    el('span', { text }),
    el('button', { type: 'button', 'aria-label': 'Dismiss', text: '×', onclick: () => node.remove() }));
  container.append(node);
  const ttl = timeoutMs ?? (kind === 'error' ? 0 : 6000);
  if (ttl) setTimeout(() => node.remove(), ttl);
  return node;
}

export function dismiss(key) {
  box().querySelector(`[data-key="${key}"]`)?.remove();
}
