// Socket.IO limits, seen by the official `socket.io-client`, for signalbox's limits tests.
// Usage:
//   node sio_limits.mjs flood <base-url> <token> <count>
//     emits <count> `webrtc:offer` events at once (with acks) on one connection and prints one
//     JSON line {sent, ok, rateLimited, otherErrors, unanswered, after}: how each was answered
//     within 20 s, and the answer to one more event sent 1.5 s later (the connection must stay
//     usable).
//   node sio_limits.mjs connect <base-url> <token> <count>
//     opens <count> connections one after the other and prints one JSON line
//     {connected, refused: [messages of connect_error]}, then closes them all.
// Every wait has a deadline; the whole run exits 1 after 60 s.
import { io } from 'socket.io-client';

const [mode, base, token, countArg] = process.argv.slice(2);
const count = Number(countArg);
const fail = (why) => { console.error(`sio_limits: ${why}`); process.exit(1); };
setTimeout(() => fail('timed out after 60 s'), 60_000).unref();

function connect() {
  const socket = io(base, { auth: { token }, transports: ['websocket'], reconnection: false, forceNew: true });
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ socket, error: 'no connect within 10 s' }), 10_000);
    socket.once('connect', () => { clearTimeout(timer); resolve({ socket, error: null }); });
    socket.once('connect_error', (e) => { clearTimeout(timer); resolve({ socket, error: e.message }); });
  });
}

const offer = { type: 'offer', sdp: 'v=0\r\n' };

if (mode === 'flood') {
  const { socket, error } = await connect();
  if (error) fail(`connect: ${error}`);
  const tally = { sent: 0, ok: 0, rateLimited: 0, otherErrors: 0, unanswered: 0, codes: {} };
  const pending = [];
  for (let i = 0; i < count; i++) {
    tally.sent++;
    // Addressed to a user with no call: answered `no_call` when let through.
    pending.push(socket.timeout(20_000).emitWithAck('webrtc:offer', { to: 'nobody', sdp: offer })
      .then((a) => {
        if (a?.ok) tally.ok++;
        else if (a?.error?.code === 'rate_limited') tally.rateLimited++;
        else { tally.otherErrors++; tally.codes[a?.error?.code] = (tally.codes[a?.error?.code] ?? 0) + 1; }
      })
      .catch(() => { tally.unanswered++; }));
  }
  await Promise.all(pending);
  await new Promise((r) => setTimeout(r, 1500));
  tally.after = await socket.timeout(10_000).emitWithAck('webrtc:call', { to: 'nobody' }).catch((e) => ({ unanswered: String(e) }));
  console.log(JSON.stringify(tally));
  socket.close();
  process.exit(0);
} else if (mode === 'connect') {
  const sockets = [];
  const refused = [];
  let connected = 0;
  for (let i = 0; i < count; i++) {
    const { socket, error } = await connect();
    sockets.push(socket);
    if (error) refused.push(error); else connected++;
  }
  console.log(JSON.stringify({ connected, refused }));
  for (const s of sockets) s.close();
  process.exit(0);
} else {
  fail(`unknown mode ${mode}`);
}
