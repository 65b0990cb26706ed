// session.js — who is signed in: the bearer token (kept in localStorage), the `#token=` link
// that host applications use to sign users in, account login, and sign-out. Knows nothing of
// the DOM; the app listens for 'change' to switch between the sign-in page and the app.

import { api, ApiError } from './api.js';

const KEY = 'signalbox.token';

/** Decodes a JWT's claims without verifying it (the server verifies; this is for display/expiry). */
export function claims(token) {
  try {
    const part = token.split('.')[1];
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '='));
    return JSON.parse(decodeURIComponent(escape(json)));
  } catch {
    return null;
  }
}

/** Milliseconds until the token's `exp` (negative once past), or null for a token without one. */
export function msUntilExpiry(token) {
  const c = token ? claims(token) : null;
  return c && typeof c.exp === 'number' ? c.exp * 1000 - Date.now() : null;
}

export function isExpired(token, skewSeconds = 0) {
  const left = msUntilExpiry(token);
  return left !== null && left <= skewSeconds * 1000;
}

class Session extends EventTarget {
  constructor() {
    super();
    this.token = null;
    this.user = null; // {id, name, admin}
  }

  load() {
    try { this.token = localStorage.getItem(KEY); } catch { this.token = null; }
    return this.token;
  }

  /** Takes `token=` out of the URL fragment (so it is not left in history) and returns it. */
  takeTokenFromUrl() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get('token');
    if (!token) return null;
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
    return token;
  }

  /** Checks a token with the server and keeps it. Throws ApiError with a readable message. */
  async useToken(token) {
    token = (token || '').trim();
    if (!token) throw new ApiError(400, 'empty', 'Paste a token first.');
    if (token.split('.').length !== 3) throw new ApiError(400, 'malformed', 'That does not look like a token (a JWT has three parts separated by dots).');
    if (isExpired(token)) throw new ApiError(401, 'token_expired', 'This token has expired. Ask for a new one.');
    const { user } = await api.me(token);
    this.set(token, user);
    return user;
  }

  async login(username, password) {
    const { token, user } = await api.login(username, password);
    this.set(token, user);
    return user;
  }

  set(token, user) {
    this.token = token;
    this.user = user;
    try { localStorage.setItem(KEY, token); } catch { /* private mode: session only */ }
    this.dispatchEvent(new CustomEvent('change', { detail: { user } }));
  }

  signOut(reason) {
    this.token = null;
    this.user = null;
    try { localStorage.removeItem(KEY); } catch { /* ignore */ }
    this.dispatchEvent(new CustomEvent('change', { detail: { user: null, reason } }));
  }
}

export const session = new Session();
