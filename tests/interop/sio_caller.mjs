// A seed 000 Socket.IO caller, using the official `socket.io-client`, for signalbox's interop
// tests. Usage: node sio_caller.mjs <base-url> <token> <callee> <websocket|polling>
// It calls, offers, trickles a candidate, waits for the answer and the callee's candidate, hangs
// up, and exits 0; any failure or a 20 s timeout exits 1 with the reason on stderr. It prints
// `CALL <id>` so the test knows the call.
import { io } from 'socket.io-client';

const [base, token, callee, transport] = process.argv.slice(2);
const fail = (why) => { console.error(`sio_caller: ${why}`); process.exit(1); };
setTimeout(() => fail('timed out'), 45_000).unref();

const offer = { type: 'offer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=node\r\n' };
const candidate = { candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host', sdpMid: '0', sdpMLineIndex: 0 };

function next(socket, event) {
  return new Promise((resolve) => socket.once(event, resolve));
}

async function expectRefusedWithBadToken() {
  const bad = io(base, { auth: { token: 'not-a-token' }, transports: [transport], reconnection: false });
  const err = await next(bad, 'connect_error');
  if (!/invalid_token/.test(err.message)) fail(`bad token refused with an unexpected message: ${err.message}`);
  bad.close();
}

await expectRefusedWithBadToken();
const socket = io(base, { auth: { token }, transports: [transport], reconnection: false });
socket.on('connect_error', (e) => fail(`connect_error: ${e.message}`));
await next(socket, 'connect');

// Signaling a user you have no call with is refused, with an ack carrying the error.
const refused = await socket.emitWithAck('webrtc:offer', { to: callee, sdp: offer });
if (refused.ok !== false || refused.error?.code !== 'no_call') fail(`offer without a call: ${JSON.stringify(refused)}`);

const accepted = next(socket, 'webrtc:call-accepted');
const created = await socket.emitWithAck('webrtc:call', { to: callee, room_name: 'interop' });
if (!created.ok || !created.callId) fail(`webrtc:call ack: ${JSON.stringify(created)}`);
const callId = created.callId;
console.log(`CALL ${callId}`);
const acc = await accepted;
if (acc.callId !== callId || acc.from !== callee) fail(`call-accepted: ${JSON.stringify(acc)}`);

const answered = next(socket, 'webrtc:answer');
const theirCandidate = next(socket, 'webrtc:ice-candidate');
const sent = await socket.emitWithAck('webrtc:offer', { to: callee, sdp: offer, callId });
if (!sent.ok) fail(`offer ack: ${JSON.stringify(sent)}`);
// Without callId: the server finds the live call with `to`.
const cand = await socket.emitWithAck('webrtc:ice-candidate', { to: callee, candidate });
if (!cand.ok || cand.callId !== callId) fail(`candidate ack: ${JSON.stringify(cand)}`);
const answer = await answered;
if (answer.from !== callee || answer.callId !== callId || answer.sdp?.type !== 'answer') fail(`answer: ${JSON.stringify(answer)}`);
const theirs = await theirCandidate;
if (theirs.from !== callee || !theirs.candidate?.candidate) fail(`candidate: ${JSON.stringify(theirs)}`);

const ended = next(socket, 'webrtc:call-ended');
const end = await socket.emitWithAck('webrtc:end-call', { to: callee, callId });
if (!end.ok) fail(`end-call ack: ${JSON.stringify(end)}`);
const e = await ended;
if (e.callId !== callId || e.reason !== 'hangup') fail(`call-ended: ${JSON.stringify(e)}`);
socket.close();
console.log('OK');
process.exit(0);
