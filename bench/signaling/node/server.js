// The Node anchor of bench/signaling/run.sh: a plain Socket.IO 4.8 server doing seed 000's
// signaling (auth: {token} at the handshake, each socket in `user:<sub>`, webrtc:* events
// forwarded to `user:<to>` with `from` added), as a typical Node deployment would. HS256 JWTs
// are checked with node:crypto against JWT_SECRET_FILE (the file rtc_bench mints from). Heartbeat
// as signalbox's defaults (ping every 15 s, 30 s to answer). Prints `listening on http://ADDR`.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const { Server } = require('socket.io');

const secret = fs.readFileSync(process.env.JWT_SECRET_FILE, 'utf8').trim();
const b64 = (buf) => buf.toString('base64url');
function verify(token) {
  const [h, p, sig] = String(token ?? '').split('.');
  if (!sig) return null;
  const want = Buffer.from(b64(crypto.createHmac('sha256', secret).update(`${h}.${p}`).digest()));
  const got = Buffer.from(sig);
  if (got.length !== want.length || !crypto.timingSafeEqual(got, want)) return null;
  const header = JSON.parse(Buffer.from(h, 'base64url').toString());
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  if (header.alg !== 'HS256' || typeof claims.sub !== 'string') return null;
  return claims.exp > Date.now() / 1000 ? claims : null;
}

const httpServer = http.createServer();
const io = new Server(httpServer, { pingInterval: 15000, pingTimeout: 30000, cors: { origin: '*' } });
io.use((socket, next) => {
  let claims = null;
  try { claims = verify(socket.handshake.auth?.token); } catch { /* malformed: refused below */ }
  if (!claims) return next(new Error('invalid_token'));
  socket.data.user = claims.sub;
  next();
});
io.on('connection', (socket) => {
  const from = socket.data.user;
  socket.join(`user:${from}`);
  const relay = (event, shape) => socket.on(event, (data, ack) => {
    if (!data || typeof data.to !== 'string') {
      if (typeof ack === 'function') ack({ ok: false, error: { code: 'invalid_field', message: 'to: missing' } });
      return;
    }
    const callId = data.callId ?? (event === 'webrtc:call' ? crypto.randomUUID() : undefined);
    io.to(`user:${data.to}`).emit(event === 'webrtc:call' ? 'webrtc:incoming-call' : event, { from, callId, ...shape(data) });
    if (typeof ack === 'function') ack({ ok: true, callId });
  });
  relay('webrtc:call', (d) => ({ callType: d.callType, room_name: d.room_name }));
  relay('webrtc:offer', (d) => ({ sdp: d.sdp }));
  relay('webrtc:answer', (d) => ({ sdp: d.sdp }));
  relay('webrtc:ice-candidate', (d) => ({ candidate: d.candidate }));
  relay('webrtc:end-call', () => ({}));
});
httpServer.listen(Number(process.env.PORT ?? 0), process.env.HOST ?? '127.0.0.1', () => {
  const { address, port } = httpServer.address();
  console.log(`listening on http://${address}:${port}`);
});
