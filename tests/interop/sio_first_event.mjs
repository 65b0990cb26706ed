// Reproducer for a lost first Socket.IO event, with the official `socket.io-client`.
// Usage: node sio_first_event.mjs <base-url> <token> <callee> <workers> <cycles> [ack-timeout-ms]
//        [deadline-ms] [stop-after-lost]
//
// <workers> clients run in parallel, each <cycles> times: connect (websocket, a new connection
// every time), emit `webrtc:call` {to: <callee>, callType: 'audio'} with an ack the instant the
// `connect` event fires, wait for the ack (at most ack-timeout-ms, default 10000), disconnect.
// A call to a user with no connection ends at once as missed, so every emit should be answered
// `{ok: true, callId}`; an emit with no answer in time is "lost" (the server dropped the event).
// Once stop-after-lost events are lost (default: never) the workers stop early: the point is made.
//
// Prints one JSON line: {"sent","acked","refused","lost","connectErrors","closedBeforeConnect",
// "maxAckMs","elapsedMs","timedOut","examples"}: closedBeforeConnect counts sockets the server
// disconnected before answering CONNECT, lost includes an ack still pending when the server
// disconnected the socket, maxAckMs is the slowest ack that did come. Exit status: 0 when every
// emit was acked ok, 1 otherwise, 2 on bad usage, 3 when the whole run passed deadline-ms
// (default 120000; the counts so far are still printed).
import { io } from 'socket.io-client';

const [base, token, callee, workersArg, cyclesArg, ackArg, deadlineArg, stopArg] = process.argv.slice(2);
const workers = Number(workersArg);
const cycles = Number(cyclesArg);
const ackTimeoutMs = Number(ackArg ?? 10000);
const deadlineMs = Number(deadlineArg ?? 120000);
const stopAfterLost = Number(stopArg ?? Infinity);
if (!base || !token || !callee || !(workers > 0) || !(cycles > 0) || !(ackTimeoutMs > 0) || !(deadlineMs > 0) || !(stopAfterLost > 0)) {
  console.error('usage: node sio_first_event.mjs <base-url> <token> <callee> <workers> <cycles> [ack-timeout-ms] [deadline-ms] [stop-after-lost]');
  process.exit(2);
}

const started = Date.now();
const counts = { sent: 0, acked: 0, refused: 0, lost: 0, connectErrors: 0, closedBeforeConnect: 0, maxAckMs: 0 };
const examples = [];
const note = (what) => { if (examples.length < 5) examples.push(what); };
let stopping = false;

function report(timedOut) {
  const line = { ...counts, elapsedMs: Date.now() - started, timedOut, examples };
  console.log(JSON.stringify(line));
}

// The whole run has a deadline: whatever is still waiting then, the counts so far are printed.
// (Not unref'd: a cycle stuck with no socket left open still ends here, never in silence.)
setTimeout(() => { stopping = true; report(true); process.exit(3); }, deadlineMs);

/** One connect → emit on `connect` → ack (or not) → disconnect. */
function cycle(worker, n) {
  return new Promise((resolve) => {
    const socket = io(base, {
      auth: { token },
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
      timeout: 10000,
    });
    const done = (outcome) => { socket.disconnect(); resolve(outcome); };
    socket.once('connect_error', (e) => {
      counts.connectErrors += 1;
      note(`worker ${worker} cycle ${n}: connect_error ${e.message}`);
      done();
    });
    // Closed by the server before the CONNECT answer: neither `connect` nor `connect_error`.
    const closed = (reason) => {
      counts.closedBeforeConnect += 1;
      note(`worker ${worker} cycle ${n}: closed before connect (${reason})`);
      done();
    };
    socket.once('disconnect', closed);
    socket.once('connect', () => {
      socket.off('disconnect', closed);
      // No await, no timer between the CONNECT answer and the emit: the race under test.
      counts.sent += 1;
      const emitted = Date.now();
      socket.timeout(ackTimeoutMs).emitWithAck('webrtc:call', { to: callee, callType: 'audio' }).then(
        (ack) => {
          counts.maxAckMs = Math.max(counts.maxAckMs, Date.now() - emitted);
          if (ack && ack.ok === true && typeof ack.callId === 'string') {
            counts.acked += 1;
          } else {
            counts.refused += 1;
            note(`worker ${worker} cycle ${n}: refused ${JSON.stringify(ack)}`);
          }
          done();
        },
        (e) => {
          // A timeout, or the socket closed with the ack pending (no id any more then).
          counts.lost += 1;
          if (counts.lost >= stopAfterLost) stopping = true;
          note(`worker ${worker} cycle ${n}: no ack (${e?.message}; connected: ${socket.connected})`);
          done();
        },
      );
    });
  });
}

async function worker(w) {
  for (let n = 0; n < cycles && !stopping; n++) await cycle(w, n);
}

await Promise.all(Array.from({ length: workers }, (_, w) => worker(w)));
report(false);
const clean = counts.acked === workers * cycles;
process.exit(clean ? 0 : 1);
