"""Two aiortc participants (a WebRTC stack we did not write) in one signalbox room on the SFU.

Each joins the room over /rtc, sends its offer to the reserved peer `sfu` with one video track
(aiortc's VideoStreamTrack, VP8-encoded by aiortc), answers the SFU's offers, and decodes the
video the SFU forwards from the other. Prints one JSON line: per participant, the topology in
the join ack, the stream ids of the remote video tracks and the frames decoded from each.

usage: sfu_aiortc.py WS_BASE ROOM_ID TOKEN_A TOKEN_B [SECONDS]
"""

import asyncio
import json
import sys

import websockets
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError


class Participant:
    def __init__(self, base, room, token):
        self.url = f"{base}/rtc?token={token}"
        self.room = room
        self.pc = RTCPeerConnection()
        self.decoded = {}  # remote video track -> frames decoded
        self.frames = {}  # stream id of the remote track -> frames decoded
        self.topology = None
        self.errors = []
        self.next_id = 0
        self.tasks = []

    async def send(self, ws, msg):
        self.next_id += 1
        msg["id"] = self.next_id
        await ws.send(json.dumps(msg))
        return self.next_id

    async def consume(self, track):
        self.decoded.setdefault(track, 0)
        try:
            while True:
                await track.recv()  # a decoded av.VideoFrame
                self.decoded[track] += 1
        except MediaStreamError:
            pass

    async def run(self, seconds):
        async with websockets.connect(self.url, max_size=2**22) as ws:
            welcome = json.loads(await ws.recv())
            assert welcome["type"] == "welcome", welcome
            join_id = await self.send(ws, {"type": "room-join", "roomId": self.room})
            call_id = None
            while call_id is None:
                m = json.loads(await ws.recv())
                if m.get("id") == join_id:
                    if m["type"] != "ack":
                        raise SystemExit(f"room-join refused: {m}")
                    call_id, self.topology = m["callId"], m.get("topology")

            @self.pc.on("track")
            def on_track(track):
                if track.kind == "video":
                    self.tasks.append(asyncio.ensure_future(self.consume(track)))

            self.pc.addTrack(VideoStreamTrack())
            await self.pc.setLocalDescription(await self.pc.createOffer())
            await self.send(ws, {
                "type": "call-sdp-update", "callId": call_id, "to": "sfu",
                "sdp": {"type": "offer", "sdp": self.pc.localDescription.sdp},
            })
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            while loop.time() < end:
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, end - loop.time()))
                except asyncio.TimeoutError:
                    break
                m = json.loads(raw)
                if m["type"] == "error":
                    self.errors.append(m)
                if m["type"] != "call-sdp-update" or m.get("from") != "sfu":
                    continue
                desc = m["sdp"]
                await self.pc.setRemoteDescription(RTCSessionDescription(desc["sdp"], desc["type"]))
                label_streams(self.pc, desc["sdp"])
                if desc["type"] == "offer":
                    await self.pc.setLocalDescription(await self.pc.createAnswer())
                    await self.send(ws, {
                        "type": "call-sdp-update", "callId": call_id, "to": "sfu",
                        "sdp": {"type": "answer", "sdp": self.pc.localDescription.sdp},
                    })
        for t in self.pc.getTransceivers():
            if t.receiver.track in self.decoded:
                stream = getattr(t, "_sfu_stream", "?")
                self.frames[stream] = self.frames.get(stream, 0) + self.decoded[t.receiver.track]
        await self.pc.close()
        for t in self.tasks:
            t.cancel()


def label_streams(pc, sdp):
    """Notes each transceiver's stream id from the offer's `a=msid` lines (by mid)."""
    mid, by_mid = None, {}
    for line in sdp.splitlines():
        if line.startswith("a=mid:"):
            mid = line[len("a=mid:"):].strip()
        elif line.startswith("a=msid:") and mid is not None:
            by_mid[mid] = line[len("a=msid:"):].split()[0]
    for t in pc.getTransceivers():
        if t.mid in by_mid:
            t._sfu_stream = by_mid[t.mid]


async def main():
    base, room, token_a, token_b = sys.argv[1:5]
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 12
    people = [Participant(base, room, t) for t in (token_a, token_b)]
    await asyncio.gather(*(p.run(seconds) for p in people))
    print(json.dumps([
        {"topology": p.topology, "frames": p.frames, "errors": p.errors} for p in people
    ]))


if __name__ == "__main__":
    asyncio.run(main())
