#!/usr/bin/env python3
"""RIPT interop client on an independent QUIC/HTTP/3 stack (aioquic).

Exercises a RIPT server against /work/shared/ript-profile.md (resources §2, JSON §3,
advertisements and directives §4, streaming-JSON signaling byways §5, media chunks §6, the
details of §9) over one HTTP/3 connection, loopback only. Everything RIPT-specific is written
here from the profile text: the QUIC varint codec (RFC 9000 §16), the frame/TLV chunk codec,
truncated sequence-number extension and the incremental parser of the endless JSON array.
aioquic only provides QUIC, TLS and HTTP/3 framing.

Prints one `OK <step>` line per passed step; on the first failure prints `FAIL <step>: why`
on stderr and exits 1 (2 for usage errors).

    python3 ript_aioquic_client.py --root https://127.0.0.1:PORT --token T --ca cert.pem
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import re
import ssl
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection, Setting
from aioquic.h3.events import DataReceived, DatagramReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset

ROOT_PATH = "/.well-known/ript/v1"
PROBLEM_JSON = "application/problem+json"
OCTETS = "application/octet-stream"
STATE_EVENTS = {"proceeding", "alerting", "answered", "declined", "failed", "noanswer", "end"}
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_EVENT = 64 * 1024


class Fail(Exception):
    """A failed check: the message says what the server did wrong."""


STEP = "connect"


def step(name: str) -> None:
    global STEP
    STEP = name


def ok(name: str, detail: str = "") -> None:
    print(f"OK {name}" + (f" ({detail})" if detail else ""), flush=True)


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Fail(msg)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def rfc3339_now() -> str:
    now = datetime.now(timezone.utc)
    return f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}Z"


# ---------------------------------------------------------------------------------------
# QUIC variable-length integers (RFC 9000 §16)

VARINT_MAX = (1 << 62) - 1


def varint_encode(v: int) -> bytes:
    if v < 0 or v > VARINT_MAX:
        raise ValueError(f"varint out of range: {v}")
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return (v | 0x4000).to_bytes(2, "big")
    if v < 1 << 30:
        return (v | 0x8000_0000).to_bytes(4, "big")
    return (v | 0xC000_0000_0000_0000).to_bytes(8, "big")


def varint_decode(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, next position); raises ValueError on truncation."""
    if pos >= len(buf):
        raise ValueError("varint: no bytes left")
    n = 1 << (buf[pos] >> 6)
    if pos + n > len(buf):
        raise ValueError(f"varint: needs {n} bytes, {len(buf) - pos} left")
    v = buf[pos] & 0x3F
    for b in buf[pos + 1 : pos + n]:
        v = (v << 8) | b
    return v, pos + n


# ---------------------------------------------------------------------------------------
# Media chunks (ript-profile §6, §9)

T_SEQ, T_TS, T_PT, T_MEDIA, T_KIND, T_SRC, T_SINK = 1, 2, 3, 4, 5, 6, 7
T_REF, T_SPATIAL, T_TEMPORAL, T_LEVEL, T_CTRL, T_MARKER, T_SEALED = 8, 9, 10, 11, 12, 13, 14
T_ACK_DIR, T_ACK_TIME = 16, 17
KNOWN_TAGS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17}
MEDIA_ONLY_TAGS = {T_TS, T_PT, T_MEDIA, T_REF, T_SPATIAL, T_TEMPORAL, T_LEVEL, T_MARKER, T_SEALED}
ACK_ONLY_TAGS = {T_CTRL, T_ACK_DIR, T_ACK_TIME}
PT_PCMU = 0
C2S, S2C = 0, 1


def tlv(tag: int, value: bytes) -> bytes:
    return varint_encode(tag) + varint_encode(len(value)) + value


def frame(chunk: bytes) -> bytes:
    return varint_encode(len(chunk)) + chunk


def media_chunk(seq: int, ts: int, source: int, sink: int, payload: bytes) -> bytes:
    """A media chunk with full (8-byte) seq and timestamp, NULL cipher."""
    return b"".join(
        [
            tlv(T_SEQ, seq.to_bytes(8, "big")),
            tlv(T_TS, ts.to_bytes(8, "big")),
            tlv(T_PT, bytes([PT_PCMU])),
            tlv(T_SRC, bytes([source])),
            tlv(T_SINK, bytes([sink])),
            tlv(T_MEDIA, payload),
        ]
    )


def ack_chunk(direction: int, source: int, sink: int, seq: int, received_ms: int) -> bytes:
    return b"".join(
        [
            tlv(T_KIND, b"\x01"),
            tlv(T_CTRL, (1).to_bytes(2, "big")),
            tlv(T_ACK_DIR, bytes([direction])),
            tlv(T_SRC, bytes([source])),
            tlv(T_SINK, bytes([sink])),
            tlv(T_SEQ, seq.to_bytes(8, "big")),
            tlv(T_ACK_TIME, received_ms.to_bytes(8, "big")),
        ]
    )


def split_frames(buf: bytes) -> list[bytes]:
    """The chunks of a body or datagram payload; any framing error raises ValueError."""
    out, pos = [], 0
    if not buf:
        raise ValueError("no frame at all")
    while pos < len(buf):
        n, pos = varint_decode(buf, pos)
        if n == 0:
            raise ValueError("empty frame")
        if pos + n > len(buf):
            raise ValueError(f"frame of {n} bytes overruns the {len(buf) - pos} left")
        out.append(buf[pos : pos + n])
        pos += n
    return out


def be(v: bytes) -> int:
    return int.from_bytes(v, "big")


@dataclass
class Ack:
    direction: int
    source: int
    sink: int
    seq: int
    receive_ms: int | None


@dataclass
class Media:
    seq: int
    seq_len: int
    ts: int | None
    ts_len: int
    pt: int
    source: int
    sink: int
    media: bytes
    marker: bool


def decode_chunk(chunk: bytes) -> Ack | Media:
    """Strict TLV decoding per §6/§9; raises ValueError with the rule broken."""
    tags: dict[int, bytes] = {}
    pos = 0
    while pos < len(chunk):
        tag, pos = varint_decode(chunk, pos)
        n, pos = varint_decode(chunk, pos)
        if pos + n > len(chunk):
            raise ValueError(f"tag {tag}: value of {n} bytes overruns the chunk")
        value = chunk[pos : pos + n]
        pos += n
        if tag >= 64:
            continue  # extension: skipped
        if tag not in KNOWN_TAGS:
            raise ValueError(f"unknown tag {tag} < 64")
        if tag in tags:
            raise ValueError(f"tag {tag} repeated")
        tags[tag] = value

    def one_byte(tag: int) -> int:
        v = tags[tag]
        if len(v) != 1:
            raise ValueError(f"tag {tag} must be 1 byte, is {len(v)}")
        return v[0]

    kind = one_byte(T_KIND) if T_KIND in tags else 0
    for t in (T_SRC, T_SINK, T_SEQ):
        if t not in tags:
            raise ValueError(f"tag {t} missing")
    source, sink = one_byte(T_SRC), one_byte(T_SINK)
    seq = tags[T_SEQ]
    if kind == 1:
        if present := MEDIA_ONLY_TAGS & tags.keys():
            raise ValueError(f"ack carries media tags {sorted(present)}")
        for t in (T_CTRL, T_ACK_DIR):
            if t not in tags:
                raise ValueError(f"ack without tag {t}")
        if len(tags[T_CTRL]) != 2 or be(tags[T_CTRL]) != 1:
            raise ValueError(f"control type {tags[T_CTRL].hex()} is not 0x0001 (2 bytes)")
        direction = one_byte(T_ACK_DIR)
        if direction not in (C2S, S2C):
            raise ValueError(f"ack direction {direction}")
        if len(seq) != 8:
            raise ValueError(f"ack seq must be the full 8 bytes, is {len(seq)}")
        rt = None
        if T_ACK_TIME in tags:
            if not 1 <= len(tags[T_ACK_TIME]) <= 8:
                raise ValueError("ack receive time must be 1-8 bytes")
            rt = be(tags[T_ACK_TIME])
        return Ack(direction, source, sink, be(seq), rt)
    if kind != 0:
        raise ValueError(f"kind {kind}")
    if present := ACK_ONLY_TAGS & tags.keys():
        raise ValueError(f"media chunk carries ack tags {sorted(present)}")
    if T_PT not in tags:
        raise ValueError("media chunk without payload type")
    if (T_MEDIA in tags) == (T_SEALED in tags):
        raise ValueError("a media chunk carries exactly one of tags 4/14")
    if T_SEALED in tags:
        raise ValueError("sealed package but no key configured")
    if not 1 <= len(seq) <= 8:
        raise ValueError(f"seq of {len(seq)} bytes")
    if not 1 <= len(tags[T_PT]) <= 4:
        raise ValueError(f"payload type of {len(tags[T_PT])} bytes")
    ts = tags.get(T_TS)
    if ts is not None and not 1 <= len(ts) <= 8:
        raise ValueError(f"timestamp of {len(ts)} bytes")
    if T_MARKER in tags and tags[T_MARKER]:
        raise ValueError("marker must be empty")
    if T_REF in tags and tags[T_REF] not in (b"", b"\x01"):
        raise ValueError("reference frame must be empty or 1")
    for t in (T_SPATIAL, T_TEMPORAL, T_LEVEL):
        if t in tags:
            one_byte(t)
    if T_LEVEL in tags and tags[T_LEVEL][0] > 127:
        raise ValueError("audio level > 127")
    return Media(
        seq=be(seq),
        seq_len=len(seq),
        ts=None if ts is None else be(ts),
        ts_len=0 if ts is None else len(ts),
        pt=be(tags[T_PT]),
        source=source,
        sink=sink,
        media=tags[T_MEDIA],
        marker=T_MARKER in tags,
    )


class Extender:
    """Extends truncated values from the last full one seen (like RTP's extended seq)."""

    def __init__(self) -> None:
        self.last: int | None = None

    def extend(self, value: int, nbytes: int) -> int:
        if nbytes == 8:
            self.last = value
            return value
        if self.last is None:
            raise ValueError(f"truncated ({nbytes}-byte) value before any full one")
        span = 1 << (8 * nbytes)
        base = self.last - (self.last % span) + value
        best = min((c for c in (base - span, base, base + span) if c >= 0), key=lambda c: abs(c - self.last))
        self.last = max(self.last, best)
        return best


def ulaw(sample: int) -> int:
    """G.711 µ-law encoding of a 16-bit linear sample."""
    sign = 0x80 if sample < 0 else 0
    mag = min(abs(sample), 32635) + 0x84
    exponent = min(7, max(0, (mag >> 7).bit_length() - 1))
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def tone_payload(index: int) -> bytes:
    """160 samples (20 ms at 8 kHz) of a 440 Hz tone, phase continuing across chunks."""
    return bytes(
        ulaw(int(8000 * math.sin(2 * math.pi * 440 * (index * 160 + n) / 8000))) for n in range(160)
    )


# ---------------------------------------------------------------------------------------
# Streaming JSON (ript-profile §5): an endless array of event objects

ARRAY_END = object()
OUR_TOKEN = object()
_WS = b" \t\r\n"


class EventArrayParser:
    """Incremental parser of `[ obj , obj , ... ]` fed in arbitrary pieces."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.state = "start"  # start, first, value, object, after, closed
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.obj_start = 0
        self.scan = 0

    def feed(self, data: bytes) -> list[Any]:
        self.buf += data
        out: list[Any] = []
        i = self.scan
        buf = self.buf
        while i < len(buf):
            c = buf[i]
            if self.state == "object":
                if self.in_string:
                    if self.escape:
                        self.escape = False
                    elif c == 0x5C:
                        self.escape = True
                    elif c == 0x22:
                        self.in_string = False
                    elif c < 0x20:
                        raise ValueError("control character inside a JSON string")
                elif c == 0x22:
                    self.in_string = True
                elif c in b"{[":
                    self.depth += 1
                elif c in b"}]":
                    self.depth -= 1
                    if self.depth == 0:
                        raw = bytes(buf[self.obj_start : i + 1])
                        obj = json.loads(raw, parse_constant=_reject_constant)
                        if not isinstance(obj, dict):
                            raise ValueError("event is not an object")
                        out.append(obj)
                        self.state = "after"
                if self.state == "object" and i + 1 - self.obj_start > MAX_EVENT:
                    raise ValueError("event object larger than 64 KiB")
            elif c in _WS:
                pass
            elif self.state == "start":
                if c != 0x5B:
                    raise ValueError(f"array must start with '[', got {chr(c)!r}")
                self.state = "first"
            elif self.state in ("first", "value"):
                if c == 0x7B:
                    self.state, self.depth, self.obj_start = "object", 1, i
                elif c == 0x5D and self.state == "first":
                    self.state = "closed"
                    out.append(ARRAY_END)
                else:
                    raise ValueError(f"expected an event object, got {chr(c)!r}")
            elif self.state == "after":
                if c == 0x2C:
                    self.state = "value"
                elif c == 0x5D:
                    self.state = "closed"
                    out.append(ARRAY_END)
                else:
                    raise ValueError(f"expected ',' or ']' after an event, got {chr(c)!r}")
            else:  # closed
                raise ValueError(f"data after the closing ']': {chr(c)!r}")
            i += 1
        # Keep only what an unfinished object still needs.
        keep = self.obj_start if self.state == "object" else i
        del buf[:keep]
        self.obj_start -= keep if self.state == "object" else 0
        self.scan = i - keep
        return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# ---------------------------------------------------------------------------------------
# Advertisements and directives (ript-profile §4)


class _Grammar:
    def __init__(self, text: str) -> None:
        self.t, self.i = text, 0

    def ws(self) -> None:
        while self.i < len(self.t) and self.t[self.i] in " \t\r\n":
            self.i += 1

    def eof(self) -> bool:
        self.ws()
        return self.i == len(self.t)

    def take(self, pattern: str, what: str, flags: int = 0) -> str:
        self.ws()
        m = re.compile(pattern, flags).match(self.t, self.i)
        if not m:
            raise ValueError(f"expected {what} at offset {self.i} of {self.t!r}")
        self.i = m.end()
        return m.group(0)

    def peek(self, pattern: str) -> bool:
        self.ws()
        return re.compile(pattern).match(self.t, self.i) is not None

    def ident(self) -> int:
        v = int(self.take(r"[0-9]{1,3}", "an id"))
        if not 1 <= v <= 255:
            raise ValueError(f"id {v} outside 1..255")
        return v

    def codec(self) -> str:
        name = self.take(r"[A-Za-z][A-Za-z0-9\-_.]*", "a codec name")
        while self.peek(","):
            self.take(",", "','")
            self.take(r"[A-Za-z][A-Za-z0-9\-_.]*", "a parameter name")
            if self.peek("="):
                self.take("=", "'='")
                v = int(self.take(r"-?[0-9]+", "a parameter value"))
                if not -(2**63) <= v < 2**63:
                    raise ValueError("parameter value does not fit i64")
        self.take(";", "';'")
        return name


def parse_advertisement(text: str) -> list[tuple[int, str, list[str]]]:
    g, out = _Grammar(text), []
    while True:
        ident = g.ident()
        direction = g.take(r"(?:in|out)\b", "in/out", re.IGNORECASE).lower()
        g.take(":", "':'")
        codecs = [g.codec()]
        while not g.eof() and not g.peek("[0-9]"):
            codecs.append(g.codec())
        out.append((ident, direction, codecs))
        if g.eof():
            return out


def parse_directives(text: str) -> list[tuple[int, int, str]]:
    g, out = _Grammar(text), []
    while True:
        src = g.ident()
        g.take(r"to\b", "'to'", re.IGNORECASE)
        sink = g.ident()
        g.take(":", "':'")
        out.append((src, sink, g.codec()))
        if g.eof():
            return out


# ---------------------------------------------------------------------------------------
# HTTP/3 on aioquic


class StreamGone(Exception):
    pass


@dataclass
class Exchange:
    stream_id: int
    head: asyncio.Future
    body: asyncio.Queue = field(default_factory=asyncio.Queue)
    ended: bool = False

    async def response(self, timeout: float = 5.0) -> tuple[int, dict[str, str]]:
        try:
            headers = await asyncio.wait_for(asyncio.shield(self.head), timeout)
        except asyncio.TimeoutError:
            raise Fail(f"no response headers within {timeout} s") from None
        except StreamGone as e:
            raise Fail(f"stream reset before the response: {e}") from None
        fields = {k.decode().lower(): v.decode() for k, v in headers}
        status = fields.get(":status", "")
        check(status.isdigit(), f"response without a valid :status: {headers}")
        return int(status), fields

    async def next_piece(self, timeout: float = 5.0) -> bytes | None:
        """The next DATA bytes, or None at the end of the response."""
        if self.ended:
            return None
        try:
            piece = await asyncio.wait_for(self.body.get(), timeout)
        except asyncio.TimeoutError:
            raise Fail(f"response body stalled for {timeout} s") from None
        if isinstance(piece, Exception):
            raise Fail(f"response stream broke: {piece}")
        if piece is None:
            self.ended = True
        return piece

    async def read_all(self, timeout: float = 5.0, limit: int = 1 << 20) -> bytes:
        data = bytearray()
        while (piece := await self.next_piece(timeout)) is not None:
            data += piece
            check(len(data) <= limit, "response body too large")
        return bytes(data)


class RiptProtocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.exchanges: dict[int, Exchange] = {}
        self.datagrams: asyncio.Queue = asyncio.Queue()
        self.terminated: str | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        for ev in self.h3.handle_event(event):
            if isinstance(ev, DatagramReceived):
                self.datagrams.put_nowait((ev.stream_id, ev.data))
                continue
            x = self.exchanges.get(getattr(ev, "stream_id", -1))
            if x is None:
                continue
            if isinstance(ev, HeadersReceived):
                if not x.head.done():
                    x.head.set_result(ev.headers)
                if ev.stream_ended:
                    x.body.put_nowait(None)
            elif isinstance(ev, DataReceived):
                if ev.data:
                    x.body.put_nowait(bytes(ev.data))
                if ev.stream_ended:
                    x.body.put_nowait(None)
        if isinstance(event, StreamReset):
            x = self.exchanges.get(event.stream_id)
            if x is not None:
                err = StreamGone(f"RESET_STREAM error code 0x{event.error_code:x}")
                if not x.head.done():
                    x.head.set_exception(err)
                x.body.put_nowait(err)
        elif isinstance(event, ConnectionTerminated):
            self.terminated = f"connection closed: error 0x{event.error_code:x} {event.reason_phrase!r}"
            for x in self.exchanges.values():
                if not x.head.done():
                    x.head.set_exception(StreamGone(self.terminated))
                x.body.put_nowait(StreamGone(self.terminated))

    def request(
        self,
        method: str,
        url: str,
        token: str | None,
        body: bytes | None = None,
        content_type: str | None = None,
        end_stream: bool = True,
        protocol: str | None = None,
    ) -> Exchange:
        if self.terminated:
            raise Fail(self.terminated)
        u = urlsplit(url)
        path = u.path + (f"?{u.query}" if u.query else "")
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", u.netloc.encode()),
            (b":path", path.encode()),
        ]
        if protocol is not None:
            headers.append((b":protocol", protocol.encode()))
        if token is not None:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        if content_type is not None:
            headers.append((b"content-type", content_type.encode()))
        headers.append((b"user-agent", b"ript-aioquic-interop"))
        sid = self._quic.get_next_available_stream_id()
        x = Exchange(sid, asyncio.get_running_loop().create_future())
        self.exchanges[sid] = x
        self.h3.send_headers(sid, headers, end_stream=end_stream and body is None)
        if body is not None:
            self.h3.send_data(sid, body, end_stream=end_stream)
        self.transmit()
        return x

    def send(self, x: Exchange, data: bytes, end_stream: bool = False) -> None:
        if self.terminated:
            raise Fail(self.terminated)
        self.h3.send_data(x.stream_id, data, end_stream=end_stream)
        self.transmit()

    def send_datagram(self, payload: bytes) -> None:
        self._quic.send_datagram_frame(payload)
        self.transmit()


# ---------------------------------------------------------------------------------------
# The scenario


def content_type(fields: dict[str, str]) -> str:
    return fields.get("content-type", "").split(";")[0].strip().lower()


def parse_json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ValueError as e:
        raise Fail(f"{what}: body is not JSON ({e}): {raw[:200]!r}") from None


def check_problem(status: int, fields: dict[str, str], raw: bytes, want: int, type_suffix: str | None = None) -> dict:
    check(status == want, f"expected {want}, got {status}: {raw[:300]!r}")
    check(content_type(fields) == PROBLEM_JSON, f"{want} with content-type {fields.get('content-type')!r}, not {PROBLEM_JSON}")
    p = parse_json(raw, "problem")
    check(isinstance(p, dict), f"problem is not an object: {p!r}")
    for k in ("type", "title", "status", "detail"):
        check(k in p, f"problem without {k!r}: {p}")
    check(p["status"] == want, f"problem status {p['status']!r} != {want}")
    if type_suffix is not None:
        check(isinstance(p["type"], str) and p["type"].endswith(type_suffix), f"problem type {p['type']!r} does not end in {type_suffix!r}")
    return p


class Scenario:
    def __init__(self, proto: RiptProtocol, root: str, token: str) -> None:
        self.p = proto
        self.root = root
        self.authority = urlsplit(root).netloc
        self.token = token

    def same_origin(self, uri: Any, what: str) -> str:
        check(isinstance(uri, str), f"{what} is not a string: {uri!r}")
        u = urlsplit(uri)
        check(
            u.scheme == "https" and u.netloc == self.authority and u.path.startswith(ROOT_PATH + "/"),
            f"{what} {uri!r} is not under https://{self.authority}{ROOT_PATH}/ (refusing to leave the given root)",
        )
        return uri

    async def call(self, method: str, url: str, body: bytes | None = None, ctype: str | None = None, token: Any = OUR_TOKEN) -> tuple[int, dict[str, str], bytes]:
        x = self.p.request(method, url, self.token if token is OUR_TOKEN else token, body, ctype)
        status, fields = await x.response()
        return status, fields, await x.read_all()

    async def json_ok(self, method: str, url: str, want: int, body: Any = None) -> tuple[dict[str, str], Any]:
        raw_body = None if body is None else json.dumps(body).encode()
        status, fields, raw = await self.call(method, url, raw_body, "application/json" if body is not None else None)
        check(status == want, f"{method} {url}: expected {want}, got {status}: {raw[:300]!r}")
        check(content_type(fields) == "application/json", f"{method} {url}: content-type {fields.get('content-type')!r}")
        return fields, parse_json(raw, f"{method} {url}")

    # -- a. discovery and authentication
    async def discovery(self) -> str:
        step("providertgs")
        _, doc = await self.json_ok("GET", self.root + "/providertgs", 200)
        check(isinstance(doc, dict) and isinstance(doc.get("providertgs"), list), f"not a providertgs list: {doc!r}")
        check(len(doc["providertgs"]) >= 1, "no TG offered to this token")
        for t in doc["providertgs"]:
            check(isinstance(t, dict) and {"uri", "name", "description"} <= t.keys(), f"TG summary lacks uri/name/description: {t!r}")
        tg = next((t for t in doc["providertgs"] if t["name"] == "default"), doc["providertgs"][0])
        tg_uri = self.same_origin(tg["uri"], "TG uri")
        ok("providertgs", f"{len(doc['providertgs'])} TG, {tg_uri}")

        step("tg")
        _, t = await self.json_ok("GET", tg_uri, 200)
        check(isinstance(t, dict), f"TG is not an object: {t!r}")
        for k in ("uri", "name", "description", "outbound", "advertisement"):
            check(k in t, f"TG lacks {k!r}: {sorted(t)}")
        check(t["uri"] == tg_uri, f"TG uri {t['uri']!r} != {tg_uri!r}")
        check(isinstance(t["outbound"], dict) and isinstance(t["outbound"].get("destinations"), str), f"TG outbound lacks destinations: {t['outbound']!r}")
        origins = t["outbound"].get("origins")
        check(origins is None or "-----BEGIN CERTIFICATE-----" in origins, "outbound.origins is not a PEM certificate")
        try:
            adv = parse_advertisement(t["advertisement"])
        except ValueError as e:
            raise Fail(f"TG advertisement does not follow §4: {e}") from None
        check(any(d == "in" and "pcmu" in (c.lower() for c in cs) for _, d, cs in adv), f"TG cannot receive PCMU: {t['advertisement']!r}")
        if "retry-backoff" in t:
            check(isinstance(t["retry-backoff"], int) and t["retry-backoff"] >= 2000, f"retry-backoff {t['retry-backoff']!r} below the 2000 ms floor")
        for k in ("media-timeout", "ack-timeout"):
            if k in t:
                check(isinstance(t[k], int) and t[k] > 0, f"{k} {t[k]!r}")
        ok("tg", f"advertisement {t['advertisement']!r}")

        step("unauthorized")
        status, fields, raw = await self.call("GET", self.root + "/providertgs", token="wrong-token-" + "x" * 20)
        check(status == 401, f"wrong token: expected 401, got {status}")
        check(fields.get("www-authenticate", "").split(" ")[0].lower() == "bearer", f"401 without WWW-Authenticate: Bearer (got {fields.get('www-authenticate')!r})")
        check_problem(status, fields, raw, 401)
        status, fields, raw = await self.call("GET", tg_uri, token=None)
        check(status == 401 and "www-authenticate" in fields, f"no token: expected 401 + WWW-Authenticate, got {status}")
        ok("unauthorized")
        return tg_uri

    # -- b. handler
    async def handler(self, tg: str) -> str:
        step("handler")
        body = {"handler-id": "py", "advertisement": "1 out: PCMU; 1 in: PCMU;"}
        fields, h = await self.json_ok("POST", tg + "/handlers", 201, body)
        loc = self.same_origin(fields.get("location"), "handler Location")
        check(isinstance(h, dict), f"handler is not an object: {h!r}")
        check(h.get("uri") == loc, f"handler uri {h.get('uri')!r} != Location {loc!r}")
        check(h.get("handler-id") == "py", f"handler-id {h.get('handler-id')!r}")
        try:
            parse_advertisement(h.get("advertisement", ""))
        except ValueError as e:
            raise Fail(f"echoed advertisement does not follow §4: {e}") from None
        ok("handler", loc)
        return loc

    # -- c. call
    async def create_call(self, tg: str, handler: str) -> dict:
        step("call")
        fields, c = await self.json_ok("POST", tg + "/calls", 201, {"handler": handler, "destination": "+14085551000"})
        loc = self.same_origin(fields.get("location"), "call Location")
        check(UUID_RE.search(loc) is not None, f"call Location {loc!r} has no UUID")
        check(isinstance(c, dict), f"call description is not an object: {c!r}")
        for k in ("uri", "handler", "direction", "from", "to", "state", "clientDirectives", "serverDirectives"):
            check(k in c, f"call description lacks {k!r}: {sorted(c)}")
        check(c["uri"] == loc, f"call uri {c['uri']!r} != Location {loc!r}")
        check(c["handler"] == handler, f"call handler {c['handler']!r} != {handler!r}")
        check(c["direction"] == "outbound", f"direction {c['direction']!r}")
        check(c["to"] == "+14085551000", f"to {c['to']!r}")
        check(isinstance(c["from"], str), f"from {c['from']!r}")
        check(c["state"] in STATE_EVENTS - {"end"}, f"new call in state {c['state']!r}")
        for k in ("clientDirectives", "serverDirectives"):
            try:
                dirs = parse_directives(c[k])
            except ValueError as e:
                raise Fail(f"{k} does not follow §4: {e}") from None
            check(any(codec.upper() == "PCMU" for _, _, codec in dirs), f"{k} {c[k]!r} does not use PCMU")
        ok("call", f"{loc} state={c['state']} client={c['clientDirectives']!r} server={c['serverDirectives']!r}")
        return c

    # -- d. signaling byways
    async def open_events(self, call: str) -> None:
        self.call_uri = call
        step("events")
        self.reverse = self.p.request("GET", call + "/events", self.token)
        status, fields = await self.reverse.response()
        check(status == 200, f"GET events: {status}")
        check(content_type(fields) == "application/json", f"GET events content-type {fields.get('content-type')!r}")
        self.parser = EventArrayParser()
        self.events: asyncio.Queue = asyncio.Queue()
        self.reverse_task = asyncio.create_task(self._read_reverse())
        self.forward = self.p.request("PUT", call + "/events", self.token, b"[", "application/json", end_stream=False)
        status, fields = await self.forward.response()
        check(status == 200, f"PUT events: {status}")
        first = await self.next_event()
        check(first["event"] in ("proceeding", "answered"), f"first reverse event is {first['event']!r}, not the current state")
        ok("events", f"first event {first['event']!r}")

        step("answered")
        self.p.send(self.forward, json.dumps(self.event("ping", nonce="py-1")).encode() + b"\n")
        state, pong = first["event"], None
        while state != "answered" or pong is None:
            ev = await self.next_event()
            if ev["event"] == "answered":
                check(state == "proceeding", f"answered after {state!r}")
                state = "answered"
            elif ev["event"] == "pong":
                check(pong is None, "a second pong")
                pong = ev
            else:
                raise Fail(f"unexpected event {ev['event']!r} while waiting for answered/pong")
        ok("answered")
        step("pong")
        check(pong.get("nonce") == "py-1", f"pong nonce {pong.get('nonce')!r} != 'py-1'")
        ok("pong")

    def event(self, name: str, **extra: Any) -> dict:
        return {"direction": "c2s", "timestamp": rfc3339_now(), "call": self.call_uri, "event": name, **extra}

    async def _read_reverse(self) -> None:
        try:
            while (piece := await self.reverse.next_piece(timeout=60)) is not None:
                for ev in self.parser.feed(piece):
                    self.events.put_nowait(ev)
            self.events.put_nowait(None)
        except (Fail, ValueError) as e:
            self.events.put_nowait(Fail(f"reverse byway: {e}"))

    async def next_item(self, timeout: float = 5.0) -> Any:
        try:
            item = await asyncio.wait_for(self.events.get(), timeout)
        except asyncio.TimeoutError:
            raise Fail(f"nothing on the reverse event byway for {timeout} s") from None
        if isinstance(item, Fail):
            raise item
        return item

    async def next_event(self, timeout: float = 5.0, skip_panic: bool = True) -> dict:
        while True:
            ev = await self.next_item(timeout)
            check(ev is not ARRAY_END and ev is not None, "reverse byway closed while an event was expected")
            for k in ("direction", "timestamp", "call", "event"):
                check(k in ev, f"event lacks {k!r}: {ev}")
            check(ev["direction"] == "s2c", f"server event with direction {ev['direction']!r}: {ev}")
            check(ev["call"] == self.call_uri, f"event for call {ev['call']!r}, not {self.call_uri!r}")
            check(isinstance(ev["timestamp"], str) and TIMESTAMP_RE.match(ev["timestamp"]) is not None, f"timestamp {ev['timestamp']!r} is not RFC 3339 UTC")
            if ev["event"] == "media-panic" and skip_panic:
                continue  # legitimate whenever media finds no byway (§6)
            return ev

    # -- e. datagram media
    async def datagrams(self, call: str) -> None:
        step("connect")
        settings = self.p.h3.received_settings or {}
        check(settings.get(Setting.H3_DATAGRAM) == 1, f"server SETTINGS lack SETTINGS_H3_DATAGRAM=1: { {hex(k): v for k, v in settings.items()} }")
        check(settings.get(Setting.ENABLE_CONNECT_PROTOCOL) == 1, "server SETTINGS lack SETTINGS_ENABLE_CONNECT_PROTOCOL=1")
        session = self.p.request("CONNECT", call + "/media", self.token, end_stream=False, protocol="webtransport")
        status, _ = await session.response()
        check(200 <= status < 300, f"extended CONNECT answered {status}")
        sid = session.stream_id
        ok("connect", f"stream {sid}, settings H3_DATAGRAM=1 ENABLE_CONNECT_PROTOCOL=1")

        step("datagram-media")
        qsid = varint_encode(sid // 4)
        base_ts = wall_ms()
        sent: dict[int, tuple[int, bytes]] = {}  # seq -> (timestamp, payload)
        by_ts: dict[int, tuple[int, bytes]] = {}
        acked: dict[int, Ack] = {}
        echoes: list[Media] = []
        pending_acks: list[bytes] = []
        seq_ext, ts_ext = Extender(), Extender()
        widths = {"full": 0, "truncated": 0}
        done = asyncio.Event()

        async def receive() -> None:
            while True:
                got_sid, payload = await self.p.datagrams.get()
                check(got_sid == sid, f"datagram bound to stream {got_sid}, not the CONNECT stream {sid}")
                try:
                    chunks = [decode_chunk(c) for c in split_frames(payload)]
                except ValueError as e:
                    raise Fail(f"invalid datagram from the server ({e}): {payload.hex()}") from None
                for c in chunks:
                    if isinstance(c, Ack):
                        check(c.direction == C2S, f"ack of our media with direction {c.direction}")
                        check((c.source, c.sink) == (1, 1), f"ack for source/sink {c.source}/{c.sink}, we sent 1/1")
                        check(c.seq in sent, f"ack for seq {c.seq} we never sent")
                        check(c.seq not in acked, f"seq {c.seq} acked twice")
                        if c.receive_ms is not None:
                            check(abs(c.receive_ms - wall_ms()) < 60_000, f"ack receive time {c.receive_ms} is not wall-clock ms")
                        acked[c.seq] = c
                    else:
                        check(c.source == 1 and c.sink == 1, f"echo from source {c.source} to sink {c.sink}, expected 1 → 1")
                        check(c.pt == PT_PCMU, f"echo payload type {c.pt}, expected PCMU (0)")
                        check(c.ts is not None, "echo without timestamp")
                        try:
                            seq = seq_ext.extend(c.seq, c.seq_len)
                            ts = ts_ext.extend(c.ts, c.ts_len)
                        except ValueError as e:
                            raise Fail(f"echo: {e}") from None
                        widths["full" if c.seq_len == 8 else "truncated"] += 1
                        check(not echoes or seq > echoes[-1].seq, f"echo seq {seq} after {echoes[-1].seq if echoes else None}")
                        check(ts in by_ts, f"echo timestamp {ts} (wire {c.ts_len} bytes) matches no chunk we sent")
                        check(c.media == by_ts[ts][1], f"echo payload for timestamp {ts} differs from what we sent")
                        echoes.append(Media(seq, 8, ts, 8, c.pt, c.source, c.sink, c.media, c.marker))
                        pending_acks.append(frame(ack_chunk(S2C, c.source, c.sink, seq, wall_ms())))
                if len(acked) == 20 and len(echoes) == 20:
                    done.set()

        def flush(media_frame: bytes = b"") -> None:
            payload = media_frame + b"".join(pending_acks)
            pending_acks.clear()
            if payload:
                self.p.send_datagram(qsid + payload)

        rx = asyncio.create_task(receive())
        try:
            for i in range(20):
                seq, ts, payload = 1 + i, base_ts + 20 * i, tone_payload(i)
                sent[seq] = by_ts[ts] = (ts, payload)
                # Our acks of earlier echoes ride in the same datagram (§9: may be bundled).
                flush(frame(media_chunk(seq, ts, 1, 1, payload)))
                await asyncio.sleep(0.004)
            deadline = time.monotonic() + 3.0
            while not done.is_set() and time.monotonic() < deadline and not rx.done():
                flush()
                try:
                    await asyncio.wait_for(done.wait(), 0.02)
                except asyncio.TimeoutError:
                    pass
            flush()
        finally:
            rx.cancel()
            try:
                await rx
            except asyncio.CancelledError:
                pass
        missing = sorted(set(sent) - set(acked))
        check(not missing, f"seqs never acked within 3 s: {missing}")
        check(len(echoes) >= 18, f"only {len(echoes)} of 20 chunks echoed within 3 s")
        ok("datagram-media", f"20 sent, 20 acked, {len(echoes)} echoed ({widths['full']} full, {widths['truncated']} truncated seqs)")

        # Leave datagram mode: end the CONNECT stream; the server ends its side too.
        step("connect-close")
        self.p.send(session, b"", end_stream=True)
        leftover = await session.read_all(timeout=3.0)
        check(leftover == b"", f"unexpected data on the CONNECT stream: {leftover[:100]!r}")
        ok("connect-close")

    # -- f. byway media
    async def byway_media(self, call: str) -> None:
        step("media-put")
        body = frame(media_chunk(100, wall_ms(), 1, 1, tone_payload(100)))
        status, fields, raw = await self.call("PUT", call + "/media", body, OCTETS)
        check(status == 200, f"media PUT: expected 200, got {status}: {raw[:300]!r}")
        check(content_type(fields) == OCTETS, f"media PUT answered with content-type {fields.get('content-type')!r}")
        try:
            chunks = [decode_chunk(c) for c in split_frames(raw)]
        except ValueError as e:
            raise Fail(f"media PUT answer is not valid frames ({e}): {raw.hex()}") from None
        acks = [c for c in chunks if isinstance(c, Ack)]
        check(len(acks) == len(chunks), "media PUT answer carries media chunks")
        mine = [a for a in acks if a.seq == 100]
        check(len(mine) == 1, f"no (single) ack for seq 100 in the answer: {acks}")
        check((mine[0].direction, mine[0].source, mine[0].sink) == (C2S, 1, 1), f"ack for seq 100 has direction/source/sink {mine[0]}")
        ok("media-put", f"{len(acks)} ack frame(s)")

        step("media-put-invalid")
        status, fields, raw = await self.call("PUT", call + "/media", b"\x05\x3f\x00\x01\x01\x00", OCTETS)
        check_problem(status, fields, raw, 400, "invalid-chunk")
        status, fields, raw = await self.call("PUT", call + "/media", b"", OCTETS)
        check_problem(status, fields, raw, 400)
        ok("media-put-invalid")

    # -- g. end
    async def end(self, call: str) -> None:
        step("end")
        reason = {"sip": 200, "text": "py done"}
        self.p.send(self.forward, b"," + json.dumps(self.event("end", reason=reason)).encode() + b"\n")
        self.p.send(self.forward, b"]", end_stream=True)
        ev = await self.next_event()
        check(ev["event"] == "end", f"expected the echoed end, got {ev['event']!r}")
        check(ev.get("reason") == reason, f"echoed end has reason {ev.get('reason')!r}, sent {reason!r}")
        item = await self.next_item()
        check(item is ARRAY_END, f"after end the reverse byway sent {item!r}, not ']'")
        item = await self.next_item()
        check(item is None, "the reverse byway did not end after ']'")
        forward_body = await self.forward.read_all(timeout=3.0)
        check(forward_body == b"", f"PUT events response body is not empty: {forward_body[:100]!r}")
        ok("end")

        step("final-state")
        _, c = await self.json_ok("GET", call, 200)
        check(c.get("state") == "end", f"ended call in state {c.get('state')!r}")
        check(c.get("reason") == reason, f"final reason {c.get('reason')!r}, sent {reason!r}")
        ok("final-state")

        step("events-gone")
        status, fields, raw = await self.call("GET", call + "/events")
        check_problem(status, fields, raw, 404)
        ok("events-gone")

        step("delete-405")
        status, fields, raw = await self.call("DELETE", call)
        check_problem(status, fields, raw, 405)
        allow = {m.strip().upper() for m in fields.get("allow", "").split(",")}
        check({"GET", "POST"} <= allow, f"405 with Allow {fields.get('allow')!r}")
        ok("delete-405")


async def run(args: argparse.Namespace) -> None:
    u = urlsplit(args.root)
    check(u.scheme == "https" and u.hostname is not None, f"--root must be an https URL: {args.root!r}")
    host = u.hostname
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    check(loopback, f"--root host {host!r} is not loopback; this client talks to loopback only")
    root = args.root.rstrip("/")
    if not root.endswith(ROOT_PATH):
        root += ROOT_PATH

    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536)
    config.verify_mode = ssl.CERT_REQUIRED
    config.load_verify_locations(cafile=args.ca)  # the only trust anchor
    async with connect(host, u.port or 443, configuration=config, create_protocol=RiptProtocol, wait_connected=True) as proto:
        assert isinstance(proto, RiptProtocol)
        s = Scenario(proto, root, args.token)
        tg = await s.discovery()
        handler = await s.handler(tg)
        c = await s.create_call(tg, handler)
        call = c["uri"]
        await s.open_events(call)
        await s.datagrams(call)
        await s.byway_media(call)
        await s.end(call)
        proto.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="https://127.0.0.1:PORT (loopback only)")
    ap.add_argument("--token", required=True)
    ap.add_argument("--ca", required=True, help="PEM file: the only certificate trusted")
    ap.add_argument("--timeout", type=float, default=20.0, help="global timeout (s)")
    args = ap.parse_args()
    try:
        open(args.ca, "rb").close()
    except OSError as e:
        print(f"FAIL usage: --ca {args.ca}: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except Fail as e:
        print(f"FAIL {STEP}: {e}", file=sys.stderr)
        return 1
    except (asyncio.TimeoutError, TimeoutError):
        print(f"FAIL {STEP}: global timeout of {args.timeout:g} s exceeded", file=sys.stderr)
        return 1
    except ConnectionError as e:
        why = str(e) or "handshake refused (is the server certificate signed by --ca? aioquic's log line above names the TLS alert)"
        print(f"FAIL {STEP}: QUIC/TLS connection failed: {why}", file=sys.stderr)
        return 1
    except Exception as e:  # a TLS alert, an aioquic protocol error, ...
        print(f"FAIL {STEP}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("OK all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
