// selftest.js — the connection self-test, in the spirit of the WebRTC samples' trickle-ICE
// page: for every STUN/TURN URL in /ice-config it gathers candidates with that server alone,
// records each candidate (host / srflx / relay, protocol, address) and each ICE error, and
// produces a verdict per URL and overall: is STUN reachable, is TURN reachable over UDP, TCP, TLS.

const GATHER_TIMEOUT_MS = 10000;

/** Parses `stun:host:port`, `turn:host:port?transport=tcp`, `turns:host:port` into its parts. */
export function parseIceUrl(url) {
  const m = /^(stuns?|turns?):(\[[^\]]+\]|[^:?]+)(?::(\d+))?(?:\?transport=(udp|tcp))?$/i.exec(url.trim());
  if (!m) return { url, scheme: '?', host: '?', port: null, transport: '?', kind: '?', label: url };
  const scheme = m[1].toLowerCase();
  const kind = scheme.startsWith('turn') ? 'turn' : 'stun';
  const secure = scheme.endsWith('s');
  const transport = secure ? 'tls' : (m[4] || 'udp').toLowerCase();
  const port = m[3] ? Number(m[3]) : (secure ? 5349 : 3478);
  return { url, scheme, host: m[2], port, transport, kind, label: `${kind.toUpperCase()} ${transport.toUpperCase()}` };
}

/** The address family of an IP literal: 'IPv6' when it has a colon, else 'IPv4'. */
export function addressFamily(address) {
  return String(address || '').includes(':') ? 'IPv6' : 'IPv4';
}

/** `address:port`, with an IPv6 address in brackets (`[2001:db8::1]:3478`). */
export function hostPort(address, port) {
  if (!address) return '';
  const host = addressFamily(address) === 'IPv6' && !address.startsWith('[') ? `[${address}]` : address;
  return port === null || port === undefined ? host : `${host}:${port}`;
}

/** Parses the interesting fields of an `a=candidate` line / RTCIceCandidate. */
export function describeCandidate(c) {
  const address = c.address || c.ip || '?';
  return {
    type: c.type || (/ typ (\w+)/.exec(c.candidate) || [])[1] || '?',
    protocol: c.protocol || (/candidate:\S+ \d+ (\w+)/.exec(c.candidate) || [])[1] || '?',
    address,
    family: address === '?' ? '?' : addressFamily(address),
    port: c.port ?? null,
    relatedAddress: c.relatedAddress || null,
    relatedPort: c.relatedPort ?? null,
    relayProtocol: c.relayProtocol || null,
    priority: c.priority ?? null,
    foundation: c.foundation || null,
  };
}

/**
 * Gathers candidates with one ICE server URL. Resolves with
 * {url, ...parsed, candidates, errors, ok, detail, ms}.
 */
export async function probeUrl(server, url, { onCandidate, timeoutMs = GATHER_TIMEOUT_MS } = {}) {
  const parsed = parseIceUrl(url);
  const started = performance.now();
  const iceServers = [{ urls: [url], ...(server.username ? { username: server.username, credential: server.credential } : {}) }];
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'all', iceCandidatePoolSize: 0 });
  const candidates = [];
  const errors = [];
  pc.createDataChannel('selftest');
  const done = new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), timeoutMs);
    pc.onicecandidate = (e) => {
      if (!e.candidate) { clearTimeout(timer); resolve('complete'); return; }
      if (!e.candidate.candidate) return;
      const c = { ...describeCandidate(e.candidate), url: e.url || null, ms: Math.round(performance.now() - started) };
      candidates.push(c);
      if (onCandidate) onCandidate(parsed, c);
    };
    pc.onicecandidateerror = (e) => {
      errors.push({ url: e.url, code: e.errorCode, text: e.errorText, address: e.address || null, port: e.port ?? null });
    };
  });
  await pc.setLocalDescription(await pc.createOffer());
  const end = await done;
  pc.close();
  const ms = Math.round(performance.now() - started);
  let ok;
  let detail;
  const mine = (c) => !c.url || c.url === url;
  if (parsed.kind === 'turn') {
    const relay = candidates.filter((c) => c.type === 'relay' && mine(c));
    ok = relay.length > 0;
    detail = ok
      ? `relay address ${hostPort(relay[0].address, relay[0].port)} (${relay[0].family})`
      : errors.length ? `${errors[0].code} ${errors[0].text}`.trim() : (end === 'timeout' ? 'no answer before the time-out' : 'no relay candidate');
  } else {
    const srflx = candidates.filter((c) => c.type === 'srflx' && mine(c));
    const stunErrors = errors.filter((e) => !e.url || e.url === url);
    if (srflx.length) {
      ok = true;
      detail = `your address as seen by the server: ${hostPort(srflx[0].address, srflx[0].port)} (${srflx[0].family})`;
    } else if (!stunErrors.length && end === 'complete' && candidates.some((c) => c.type === 'host')) {
      // The browser drops a server-reflexive candidate equal to a host candidate: the server
      // answered, and there is no NAT between you and it.
      ok = true;
      detail = 'answered; your address is the same as seen by the server (no NAT in between)';
    } else {
      ok = false;
      detail = stunErrors.length ? `${stunErrors[0].code} ${stunErrors[0].text}`.trim() : (end === 'timeout' ? 'no answer before the time-out' : 'no answer');
    }
  }
  return { ...parsed, candidates, errors, ok, detail, ms, end };
}

/** Runs every URL of an /ice-config answer in parallel; returns per-URL results and the verdict. */
export async function runSelfTest(iceConfig, opts = {}) {
  const jobs = [];
  for (const server of iceConfig.iceServers || []) {
    const urls = Array.isArray(server.urls) ? server.urls : [server.urls];
    for (const url of urls) jobs.push(probeUrl(server, url, opts));
  }
  const results = await Promise.all(jobs);
  return { results, verdict: verdict(results) };
}

export function verdict(results) {
  const of = (kind, transport) => results.filter((r) => r.kind === kind && (!transport || r.transport === transport));
  const status = (list) => (list.length === 0 ? 'not-offered' : list.some((r) => r.ok) ? 'reachable' : 'unreachable');
  const v = {
    stun: status(of('stun')),
    turnUdp: status(of('turn', 'udp')),
    turnTcp: status(of('turn', 'tcp')),
    turnTls: status(of('turn', 'tls')),
  };
  const anyTurn = [v.turnUdp, v.turnTcp, v.turnTls].includes('reachable');
  v.summary = results.length === 0
    ? 'This server lists no STUN or TURN servers: calls only work between browsers that can reach each other directly.'
    : anyTurn
      ? 'Calls should work: the TURN relay is reachable, so even peers behind strict firewalls can connect.'
      : v.stun === 'reachable'
        ? 'STUN works but no TURN relay is reachable: calls work only when both sides can connect directly.'
        : 'Neither STUN nor TURN is reachable: calls across networks will fail. Check the firewall for the TURN ports.';
  v.ok = anyTurn;
  return v;
}
