// stats.js — reads RTCPeerConnection.getStats() into a small summary: round-trip time, jitter,
// packet loss, bitrate both ways, frames decoded, and the selected candidate pair (relay or
// direct, which protocol). Grades it as a connection-quality level for the indicator.
// StatsSampler summarises a whole connection (1:1 calls, mesh peers); GroupedStatsSampler
// splits one connection's inbound streams by owner (the SFU connection: one summary per
// publisher, sharing the connection's path and round-trip time).
// The summary's field names are the ones the server's `call-stats` analytics read.

/** The parts of one getStats report a summary needs. */
function readReport(report) {
  const byId = new Map();
  let transport = null;
  const inbound = [];
  let bytesOut = 0;
  report.forEach((s) => {
    byId.set(s.id, s);
    if (s.type === 'transport') transport = s;
    if (s.type === 'inbound-rtp') inbound.push(s);
    if (s.type === 'outbound-rtp') bytesOut += s.bytesSent || 0;
  });
  let pair = transport && transport.selectedCandidatePairId ? byId.get(transport.selectedCandidatePairId) : null;
  if (!pair) report.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
  return {
    pair,
    local: pair ? byId.get(pair.localCandidateId) : null,
    remote: pair ? byId.get(pair.remoteCandidateId) : null,
    inbound,
    bytesOut,
  };
}

/** One summary from the connection-wide parts and a set of inbound streams. */
function summarize(parts, inbound, prev, now, connectionState) {
  let bytesIn = 0, framesDecoded = 0, packetsLost = 0, packetsReceived = 0;
  let jitter = null, videoIn = null;
  for (const s of inbound) {
    bytesIn += s.bytesReceived || 0;
    packetsLost += Math.max(0, s.packetsLost || 0);
    packetsReceived += s.packetsReceived || 0;
    if (typeof s.jitter === 'number') jitter = Math.max(jitter ?? 0, s.jitter);
    if (s.kind === 'video') {
      framesDecoded += s.framesDecoded || 0;
      videoIn = s;
    }
  }
  const { pair, local, remote, bytesOut } = parts;
  let bitrateKbps = null, sendKbps = null;
  if (prev && now > prev.at) {
    const secs = (now - prev.at) / 1000;
    bitrateKbps = Math.max(0, ((bytesIn - prev.bytesIn) * 8) / 1000 / secs);
    sendKbps = Math.max(0, ((bytesOut - prev.bytesOut) * 8) / 1000 / secs);
  }
  const total = packetsLost + packetsReceived;
  return {
    next: { at: now, bytesIn, bytesOut },
    summary: {
      rttMs: pair && typeof pair.currentRoundTripTime === 'number' ? Math.round(pair.currentRoundTripTime * 1000) : null,
      jitterMs: jitter === null ? null : Math.round(jitter * 1000 * 10) / 10,
      packetLoss: total > 0 ? packetsLost / total : 0,
      bitrateKbps: bitrateKbps === null ? null : Math.round(bitrateKbps),
      sendBitrateKbps: sendKbps === null ? null : Math.round(sendKbps),
      framesDecoded,
      frameWidth: videoIn ? videoIn.frameWidth || null : null,
      frameHeight: videoIn ? videoIn.frameHeight || null : null,
      localCandidateType: local ? local.candidateType : null,
      remoteCandidateType: remote ? remote.candidateType : null,
      relayProtocol: local && local.candidateType === 'relay' ? local.relayProtocol || local.protocol : null,
      protocol: local ? local.protocol : null,
      connectionState,
    },
  };
}

export class StatsSampler {
  constructor(pc) {
    this.pc = pc;
    this.prev = null; // {at, bytesIn, bytesOut}
  }

  async sample() {
    const parts = readReport(await this.pc.getStats());
    const { summary, next } = summarize(parts, parts.inbound, this.prev, performance.now(), this.pc.connectionState);
    this.prev = next;
    return summary;
  }
}

/**
 * One connection, several senders on the far side: `ownerOf(trackIdentifier)` names the owner
 * of each inbound stream (or null to leave it out). sample() resolves to Map owner → summary;
 * the round-trip time, path and send bitrate are the connection's own, the same in each.
 */
export class GroupedStatsSampler {
  constructor(pc, ownerOf) {
    this.pc = pc;
    this.ownerOf = ownerOf;
    this.prev = new Map(); // owner -> {at, bytesIn, bytesOut}
  }

  async sample() {
    const parts = readReport(await this.pc.getStats());
    const groups = new Map();
    for (const s of parts.inbound) {
      const owner = s.trackIdentifier ? this.ownerOf(s.trackIdentifier) : null;
      if (!owner) continue;
      if (!groups.has(owner)) groups.set(owner, []);
      groups.get(owner).push(s);
    }
    const now = performance.now();
    const out = new Map();
    for (const [owner, inbound] of groups) {
      const { summary, next } = summarize(parts, inbound, this.prev.get(owner), now, this.pc.connectionState);
      this.prev.set(owner, next);
      out.set(owner, summary);
    }
    for (const owner of [...this.prev.keys()]) if (!groups.has(owner)) this.prev.delete(owner);
    return out;
  }
}

/** 'good' | 'fair' | 'poor' | 'unknown' from a summary. */
export function grade(s) {
  if (!s || s.connectionState !== 'connected') return 'unknown';
  const rtt = s.rttMs ?? 0;
  const loss = s.packetLoss ?? 0;
  if (rtt > 400 || loss > 0.08) return 'poor';
  if (rtt > 200 || loss > 0.02) return 'fair';
  return 'good';
}

export function describePath(s) {
  if (!s || !s.localCandidateType) return 'not connected';
  const via = s.localCandidateType === 'relay' || s.remoteCandidateType === 'relay'
    ? `relayed (TURN${s.relayProtocol ? `/${s.relayProtocol}` : ''})`
    : 'direct';
  return `${via}, ${s.protocol || '?'}`;
}
