// api.js — the REST client: every HTTP call to the signalbox server goes through here.
// Owns: the bearer header, JSON encoding, and turning `{"error":{code,message}}` bodies into
// ApiError. A 401 with code `token_expired` / `invalid_token` is reported to `onUnauthorized`
// so the app can sign out with a clear message.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

let tokenGetter = () => null;
let unauthorizedHandler = () => {};

/** Tells the client where the token lives and who to tell when the server refuses it. */
export function configureApi({ getToken, onUnauthorized }) {
  tokenGetter = getToken;
  unauthorizedHandler = onUnauthorized || (() => {});
}

export async function request(method, path, body, { token, quiet } = {}) {
  const headers = { Accept: 'application/json' };
  const bearer = token ?? tokenGetter();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection.');
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : {};
    const e = new ApiError(res.status, err.code || `http_${res.status}`, err.message || `${res.status} ${res.statusText}`);
    if (res.status === 401 && !quiet) unauthorizedHandler(e);
    throw e;
  }
  return data;
}

export const api = {
  login: (username, password) => request('POST', '/api/auth/login', { username, password }, { token: '', quiet: true }),
  me: (token) => request('GET', '/api/me', undefined, { token, quiet: token !== undefined }),
  iceConfig: () => request('GET', '/ice-config'),
  history: ({ limit = 20, offset = 0 } = {}) => request('GET', `/calls/history?limit=${limit}&offset=${offset}`),
  call: (id) => request('GET', `/calls/${encodeURIComponent(id)}`),
  analytics: async (id) => { const d = await request('GET', `/calls/${encodeURIComponent(id)}/analytics`); return d.analytics || d; },
  /** `mode`: 'auto' (the server's default: peer-to-peer while small, then through the SFU), 'mesh' or 'sfu'. */
  createRoom: (name, maxParticipants, isPrivate, mode) => request('POST', '/rooms', { name, maxParticipants, isPrivate, ...(mode && mode !== 'auto' ? { mode } : {}) }),
  room: (id) => request('GET', `/rooms/${encodeURIComponent(id)}`),
  // The admin console's calls (admins only; others get 403).
  adminLive: () => request('GET', '/api/admin/live'),
  /** Ends any call: an admin's hang-up ends it for everyone (reason `admin`). */
  adminEndCall: (id) => request('PUT', `/calls/${encodeURIComponent(id)}/hangup`),
  adminCloseRoom: (id) => request('DELETE', `/rooms/${encodeURIComponent(id)}`),
  adminQuality: (id) => request('GET', `/api/admin/calls/${encodeURIComponent(id)}/quality`),
  adminUsers: () => request('GET', '/api/admin/users'),
  adminAddUser: (user) => request('POST', '/api/admin/users', user),
  adminRemoveUser: (id) => request('DELETE', `/api/admin/users/${encodeURIComponent(id)}`),
  adminSetPassword: (id, password) => request('POST', `/api/admin/users/${encodeURIComponent(id)}/password`, { password }),
  adminWebhookDeliveries: () => request('GET', '/api/admin/webhooks/deliveries'),
};
