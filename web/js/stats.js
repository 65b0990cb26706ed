// stats.js — reads RTCPeerConnection.getStats() into a small summary: round-trip time, jitter,
// packet loss, bitrate both ways, frames decoded, and the selected candidate pair (relay or
// direct, which protocol). Grades it as a connection-quality level for the indicator.
// The summary's field names are the ones the server's `call-stats` analytics read.

export class StatsSampler {
  constructor(pc) {
    this.pc = pc;
    this.prev = null; // {at, bytesIn, bytesOut}
  }

  async sample() {
    const report = await this.pc.getStats();
    let pair = null;
    let transport = null;
    const byId = new Map();
    let bytesIn = 0, bytesOut = 0, framesDecoded = 0, packetsLost = 0, packetsReceived = 0;
    let jitter = null, videoIn = null;
    report.forEach((s) => {
      byId.set(s.id, s);
      if (s.type === 'transport') transport = s;
      if (s.type === 'inbound-rtp') {
        bytesIn += s.bytesReceived || 0;
        packetsLost += Math.max(0, s.packetsLost || 0);
        packetsReceived += s.packetsReceived || 0;
        if (typeof s.jitter === 'number') jitter = Math.max(jitter ?? 0, s.jitter);
        if (s.kind === 'video') {
          framesDecoded += s.framesDecoded || 0;
          videoIn = s;
        }
      }
      if (s.type === 'outbound-rtp') bytesOut += s.bytesSent || 0;
    });
    if (transport && transport.selectedCandidatePairId) pair = byId.get(transport.selectedCandidatePairId);
    if (!pair) report.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
    const local = pair ? byId.get(pair.localCandidateId) : null;
    const remote = pair ? byId.get(pair.remoteCandidateId) : null;
    const now = performance.now();
    let bitrateKbps = null, sendKbps = null;
    if (this.prev && now > this.prev.at) {
      const secs = (now - this.prev.at) / 1000;
      bitrateKbps = Math.max(0, ((bytesIn - this.prev.bytesIn) * 8) / 1000 / secs);
      sendKbps = Math.max(0, ((bytesOut - this.prev.bytesOut) * 8) / 1000 / secs);
    }
    this.prev = { at: now, bytesIn, bytesOut };
    const total = packetsLost + packetsReceived;
    return {
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
      connectionState: this.pc.connectionState,
    };
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
