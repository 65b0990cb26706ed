#!/usr/bin/env python3
"""Writes the binary seed inputs of the STUN/TURN fuzz targets (stdlib only; run from anywhere):

- stun_decode/: STUN requests as bytes (Binding, Allocate unsigned and signed, CreatePermission,
  ChannelBind, Refresh, a Send indication, a success and an error response) and ChannelData;
- stream_framing/: one chunk-size byte, then a TCP stream of those messages, ChannelData padded
  to 4 bytes as on stream transports;
- turn_core/: inputs in the harness's own encoding (the `arbitrary` crate's `Unstructured`, as
  consumed by fuzz_targets/turn_core.rs) that play whole relay sessions; check one with
  `TURN_CORE_TRACE=1 cargo fuzz run turn_core fuzz/seeds/turn_core/<file>`.

The STUN encoder here is written from RFC 8489/8656, independently of the code under test.
"""

import hashlib
import hmac
import os
import struct
import zlib

COOKIE = 0x2112A442
HERE = os.path.dirname(os.path.abspath(__file__))

# Message types (method | class bits).
BINDING, ALLOCATE, REFRESH, SEND, CREATE_PERMISSION, CHANNEL_BIND = 0x1, 0x3, 0x4, 0x6, 0x8, 0x9
INDICATION, SUCCESS, ERROR = 0x0010, 0x0100, 0x0110


def attr(typ, value):
    pad = b"\0" * (-len(value) % 4)
    return struct.pack("!HH", typ, len(value)) + value + pad


def xor_addr(typ, ip, port):
    a = bytes(int(x) for x in ip.split("."))
    x = bytes(b ^ c for b, c in zip(a, struct.pack("!I", COOKIE)))
    return attr(typ, struct.pack("!BBH", 0, 1, port ^ (COOKIE >> 16)) + x)


def lifetime(s):
    return attr(0x000D, struct.pack("!I", s))


def transport_udp():
    return attr(0x0019, bytes([17, 0, 0, 0]))


def peer(ip, port):
    return xor_addr(0x0012, ip, port)


def channel(n):
    return attr(0x000C, struct.pack("!HH", n, 0))


def data(b):
    return attr(0x0013, b)


def message(typ, tid, attrs, key=None, fingerprint=True):
    body = b"".join(attrs)

    def header(extra):
        return struct.pack("!HHI", typ, len(body) + extra, COOKIE) + tid

    if key is not None:
        mac = hmac.new(key, header(24) + body, hashlib.sha1).digest()
        body += attr(0x0008, mac)
    if fingerprint:
        crc = (zlib.crc32(header(8) + body) ^ 0x5354554E) & 0xFFFFFFFF
        body += attr(0x8028, struct.pack("!I", crc))
    return header(0) + body


def signed(typ, tid, attrs, user="1900000000:alice", realm="signalbox", password="pw"):
    nonce = "0000000065000000" + "ab" * 10
    creds = [
        attr(0x0006, user.encode()),
        attr(0x0014, realm.encode()),
        attr(0x0015, nonce.encode()),
    ]
    key = hashlib.md5(f"{user}:{realm}:{password}".encode()).digest()
    return message(typ, tid, attrs + creds, key=key)


def channel_data(n, payload, pad=False):
    out = struct.pack("!HH", n, len(payload)) + payload
    return out + b"\0" * (-len(out) % 4 if pad else 0)


def tid(i):
    return bytes([i]) * 12


STUN = {
    "binding.bin": message(BINDING, tid(1), []),
    "binding-nofp.bin": message(BINDING, tid(2), [], fingerprint=False),
    "binding-software.bin": message(BINDING, tid(3), [attr(0x8022, b"fuzz")]),
    "allocate-unsigned.bin": message(ALLOCATE, tid(4), [transport_udp()]),
    "allocate-signed.bin": signed(ALLOCATE, tid(5), [transport_udp(), lifetime(600)]),
    "allocate-even-port.bin": signed(ALLOCATE, tid(6), [transport_udp(), attr(0x0018, b"\x80")]),
    "create-permission.bin": signed(CREATE_PERMISSION, tid(7), [peer("8.8.8.8", 1000)]),
    "channel-bind.bin": signed(CHANNEL_BIND, tid(8), [channel(0x4001), peer("8.8.8.8", 1000)]),
    "refresh-0.bin": signed(REFRESH, tid(9), [lifetime(0)]),
    "send.bin": message(SEND | INDICATION, tid(10), [peer("8.8.8.8", 1000), data(b"hello")]),
    "success.bin": message(
        ALLOCATE | SUCCESS,
        tid(11),
        [xor_addr(0x0016, "198.51.100.1", 49152), lifetime(600), xor_addr(0x0020, "203.0.113.3", 5000)],
    ),
    "error-401.bin": message(
        ALLOCATE | ERROR, tid(12), [attr(0x0009, bytes([0, 0, 4, 1]) + b"Unauthorized")]
    ),
    "channel-data.bin": channel_data(0x4001, b"hello"),
    "channel-data-empty.bin": channel_data(0x7FFF, b""),
}

STREAMS = {
    # Chunk size byte (1 + b % 64), then the stream.
    "stream-mixed.bin": bytes([6])
    + STUN["binding.bin"]
    + channel_data(0x4001, b"hello", pad=True)
    + STUN["allocate-signed.bin"]
    + channel_data(0x4002, b"four", pad=True),
    "stream-one-byte-reads.bin": bytes([0]) + STUN["send.bin"] + channel_data(0x4003, b"x", pad=True),
    "stream-trailing-garbage.bin": bytes([63]) + STUN["channel-bind.bin"] + b"\xff\xff\x00\x00",
}


class Unstructured:
    """The inverse of `arbitrary::Unstructured` for the calls turn_core.rs makes."""

    def __init__(self):
        self.out = bytearray()

    def int_in_range(self, lo, hi, value, size=8):
        delta = hi - lo
        assert lo <= value <= hi
        n = 0
        while n < size and delta >> (8 * n):
            n += 1
        self.out += (value - lo).to_bytes(n, "big") if n else b""

    def ratio(self, num, den, want):
        # int_in_range(1..=den) <= num
        self.int_in_range(1, den, 1 if want else den)

    def choose(self, n, index):
        self.int_in_range(0, n - 1, index)

    def u16(self, v):
        self.out += struct.pack("<H", v)

    def u32(self, v):
        self.out += struct.pack("<I", v)

    def bytes(self, b, max_len):
        self.int_in_range(0, max_len, len(b))
        self.out += b


TRANSPORTS = ["udp", "tcp", "tls"]
METHODS = [BINDING, ALLOCATE, REFRESH, SEND, CREATE_PERMISSION, CHANNEL_BIND]
USERS = ["alice", "bob", "carol"]


class Session:
    """Writes one turn_core input step by step (see `World::step` in turn_core.rs)."""

    def __init__(self, user_quota=2, total_quota=4, bitrate=None):
        self.u = Unstructured()
        u = self.u
        u.ratio(1, 4, False)  # peer policy: default
        u.int_in_range(1, 3, user_quota)
        u.int_in_range(1, 6, total_quota)
        u.ratio(1, 4, bitrate is not None)
        if bitrate is not None:
            u.int_in_range(1, 10_000_000, bitrate)
        u.ratio(1, 4, False)  # external ip
        u.ratio(1, 8, False)  # relay is v6

    def _end(self):
        self.u.ratio(1, 16, False)  # binder keeps working

    def _tuple(self, client, transport):
        self.u.choose(3, TRANSPORTS.index(transport))
        self.u.int_in_range(0, 5, client)  # 203.0.113.<client>, client >= 3
        self.u.ratio(1, 4, False)  # port 5000

    def request(self, method, attrs, client=3, transport="udp", user="alice",
                indication=False, retransmit=False, tid=1):
        u = self.u
        u.int_in_range(0, 8, 1)
        self._tuple(client, transport)
        u.ratio(7, 8, True)
        u.choose(len(METHODS), METHODS.index(method))
        u.ratio(1, 8, indication)
        u.int_in_range(0, 5, len(attrs))
        for a in attrs:
            a(u)
        u.choose(3, USERS.index(user))
        u.ratio(1, 8, False)  # fresh credentials
        u.ratio(1, 8, False)  # right password
        u.ratio(1, 8, False)  # valid nonce
        u.out += bytes([tid]) * 12
        u.ratio(1, 8, retransmit)
        self._end()

    def channel_data(self, n, payload, client=3, transport="udp"):
        self.u.int_in_range(0, 8, 4)
        self._tuple(client, transport)
        self.u.u16(n)
        self.u.bytes(payload, 64)
        self.u.ratio(1, 4, False)
        self._end()

    def from_peer(self, bound, index, length):
        self.u.int_in_range(0, 8, 5)
        self.u.choose(bound, index)
        self.u.int_in_range(0, 4, 0)  # 8.8.8.8:1000
        self.u.int_in_range(0, 1500, length)
        self._end()

    def wait(self, seconds):
        self.u.int_in_range(0, 8, 6)
        self.u.int_in_range(0, 4000, seconds)
        self._end()

    def sweep(self):
        self.u.int_in_range(0, 8, 7)
        self._end()

    def close(self, client=3, transport="tcp"):
        self.u.int_in_range(0, 8, 8)
        self.u.ratio(1, 8, False)
        self._tuple(client, transport)
        self._end()


def a_lifetime(s):
    return lambda u: (u.int_in_range(0, 6, 0), u.u32(s))


def a_udp(u):
    u.int_in_range(0, 6, 1)
    u.ratio(3, 4, True)


def a_peer(u):
    u.int_in_range(0, 6, 2)
    u.int_in_range(0, 4, 0)  # 8.8.8.8:1000


def a_channel(n):
    return lambda u: (u.int_in_range(0, 6, 3), u.u16(n))


def a_data(b):
    return lambda u: (u.int_in_range(0, 6, 4), u.bytes(b, 64))


def relay_session():
    s = Session()
    s.request(ALLOCATE, [a_udp, a_lifetime(600)], tid=1)
    s.request(CREATE_PERMISSION, [a_peer], tid=2)
    s.request(CHANNEL_BIND, [a_channel(0x4001), a_peer], tid=3)
    s.channel_data(0x4001, b"hello")
    s.request(SEND, [a_peer, a_data(b"hi")], indication=True, tid=4)
    s.from_peer(1, 0, 100)
    s.request(REFRESH, [a_lifetime(0)], tid=5)
    s.from_peer(1, 0, 100)
    return bytes(s.u.out)


def expiry_session():
    s = Session(bitrate=64_000)
    s.request(BINDING, [], transport="tcp", tid=1)
    s.request(ALLOCATE, [a_udp], transport="tcp", retransmit=True, tid=2)
    s.request(REFRESH, [a_lifetime(3600)], transport="tcp", tid=3)
    s.wait(4000)
    s.sweep()
    s.from_peer(1, 0, 1500)
    s.request(ALLOCATE, [a_udp], transport="tcp", tid=4)
    s.close(transport="tcp")
    return bytes(s.u.out)


def quota_session():
    s = Session(user_quota=1, total_quota=2)
    s.request(ALLOCATE, [a_udp], client=3, tid=1)
    s.request(ALLOCATE, [a_udp], client=4, tid=2)  # alice again: 486
    s.request(ALLOCATE, [a_udp], client=4, user="bob", tid=3)
    s.request(ALLOCATE, [a_udp], client=5, user="carol", tid=4)  # total: 508
    s.request(CHANNEL_BIND, [a_channel(0x4000), a_peer], client=4, user="bob", tid=5)
    s.channel_data(0x4000, b"", client=4)
    return bytes(s.u.out)


CORE = {
    "relay-session.bin": relay_session(),
    "expiry-session.bin": expiry_session(),
    "quota-session.bin": quota_session(),
}


def write(target, files):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    for name, content in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(content)


if __name__ == "__main__":
    write("stun_decode", STUN)
    write("stream_framing", STREAMS)
    write("turn_core", CORE)
