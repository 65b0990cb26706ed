"""A seed 000 Socket.IO caller using python-socketio, for signalbox's interop tests.

Usage: python sio_caller.py <base-url> <token> <callee> <websocket|polling>
Same script as sio_caller.mjs: call, offer, trickle, wait for the answer and a candidate, hang
up; exit 0 on success, 1 with the reason on stderr. Prints `CALL <id>`.
"""
import os
import queue
import sys
import threading

import socketio

base, token, callee, transport = sys.argv[1:5]
OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=python\r\n"}
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}


def fail(why):
    print(f"sio_caller.py: {why}", file=sys.stderr, flush=True)
    os._exit(1)


threading.Timer(45, lambda: (print("sio_caller.py: timed out", file=sys.stderr, flush=True), __import__("os")._exit(1))).start()

events = {name: queue.Queue() for name in ["webrtc:call-accepted", "webrtc:answer", "webrtc:ice-candidate", "webrtc:call-ended"]}
sio = socketio.Client(reconnection=False)
for name, q in events.items():
    sio.on(name, lambda data, q=q: q.put(data))
sio.connect(base, auth={"token": token}, transports=[transport], wait_timeout=10)


def get(name):
    try:
        return events[name].get(timeout=10)
    except queue.Empty:
        fail(f"no {name}")


created = sio.call("webrtc:call", {"to": callee}, timeout=10)
if not created.get("ok") or not created.get("callId"):
    fail(f"webrtc:call ack: {created}")
call_id = created["callId"]
print(f"CALL {call_id}", flush=True)
acc = get("webrtc:call-accepted")
if acc.get("callId") != call_id:
    fail(f"call-accepted: {acc}")
ack = sio.call("webrtc:offer", {"to": callee, "sdp": OFFER, "callId": call_id}, timeout=10)
if not ack.get("ok"):
    fail(f"offer ack: {ack}")
ack = sio.call("webrtc:ice-candidate", {"to": callee, "candidate": CANDIDATE, "callId": call_id}, timeout=10)
if not ack.get("ok"):
    fail(f"candidate ack: {ack}")
answer = get("webrtc:answer")
if answer.get("from") != callee or answer.get("sdp", {}).get("type") != "answer":
    fail(f"answer: {answer}")
theirs = get("webrtc:ice-candidate")
if theirs.get("from") != callee:
    fail(f"candidate: {theirs}")
ack = sio.call("webrtc:end-call", {"to": callee, "callId": call_id}, timeout=10)
if not ack.get("ok"):
    fail(f"end-call ack: {ack}")
ended = get("webrtc:call-ended")
if ended.get("reason") != "hangup":
    fail(f"call-ended: {ended}")
sio.disconnect()

# A bad token is refused at the handshake.
bad = socketio.Client(reconnection=False)
refusals = []
bad.on("connect_error", lambda data: refusals.append(data))
try:
    bad.connect(base, auth={"token": "nope"}, transports=[transport], wait_timeout=3)
    fail("connected with a bad token")
except socketio.exceptions.ConnectionError:
    if "invalid_token" not in str(refusals):
        fail(f"bad token refused with an unexpected message: {refusals}")
print("OK", flush=True)
__import__("os")._exit(0)
