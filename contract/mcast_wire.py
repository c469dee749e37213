"""Wire formats of cdnlab's multicast protocols: content ingest, invalidation and the control channel.

One datagram carries one message. Every message starts with a fixed 36-byte common header (network
byte order)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-------------------------------+---------------+---------------+
    |        magic = 0xCD4D         |  version = 1  |     type      |
    +-------------------------------+---------------+---------------+
    |                          session id                           |
    +---------------------------------------------------------------+
    |                           sender id                           |
    +---------------------------------------------------------------+
    |                     sequence (per sender)                     |
    +-------------------------------+-------------------------------+
    |   length (of the body)        |   flags (bit 0: keyed tag)    |
    +-------------------------------+-------------------------------+
    |              tag (16 bytes): HMAC-SHA-256 truncated           |
    |     over header-with-zero-tag + body when a key is configured,|
    |          else SHA-256 truncated (integrity only)              |
    +---------------------------------------------------------------+

The body layouts (also big-endian) follow the ``_B_*`` structs below; strings are 16-bit length-prefixed
UTF-8. The reliable ingest scheme (META + DATA chunks, NACK ranges, multicast REPAIR, periodic
SENDER_REPORT that works as NORM's FLUSH/announcement) is modelled on NORM, RFC 5740, reduced to what
a CDN's origin-to-edge push needs. Decoding is strict: any inconsistency raises :class:`WireError`
with a ``reason`` that receivers count (``malformed``, ``auth``, ``version``...).

The tag authenticates but does not make a datagram fresh: the control messages (:data:`CONTROL_TYPES`)
also pass a per-(session, sender) anti-replay window over the header's sequence number,
:mod:`contract.replay_window` (after RFC 4303 §3.4.3), so a captured INVALIDATE or HEARTBEAT sent again
later is dropped and counted as ``replayed``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from dataclasses import dataclass, field
from enum import IntEnum

MAGIC = 0xCD4D
VERSION = 1
HEADER = struct.Struct("!HBBIIIHH16s")
HEADER_LEN = HEADER.size  # 36
TAG_LEN = 16
FLAG_KEYED = 0x0001
MAX_DATAGRAM = 65507
MAX_PATH = 4096
DEFAULT_CHUNK = 1200  # DATA payload bytes: a full DATA datagram stays below a 1500-byte MTU

# Default UDP ports (configs may change them; testbed.measure.layers binds Scapy to these).
DATA_PORT = 7400  # ingest + invalidation group
CONTROL_PORT = 7401  # heartbeat/control group
FEEDBACK_PORT = 7402  # the origin's unicast NACK port
# The CDN's two sessions (the header's session id) and the control group a topology that names none gets;
# a run's groups, ports, ids and key are planned once in testbed.net.mcast_plan
INGEST_SESSION = 1  # content ingest + invalidation: origin -> edges
CONTROL_SESSION = 2  # heartbeats: edges -> control plane (DNS, redirector, origin, the SDN controller)
DEFAULT_CONTROL_GROUP = "239.10.0.2"


class MsgType(IntEnum):
    OBJECT_META = 1
    OBJECT_DATA = 2
    MANIFEST = 3
    NACK = 4
    REPAIR = 5
    INVALIDATE = 6
    HEARTBEAT = 7
    SENDER_REPORT = 8


class Role(IntEnum):
    OTHER = 0
    EDGE = 1
    ORIGIN = 2
    DNS = 3
    REDIRECTOR = 4
    CONTROLLER = 5


class InvalAction(IntEnum):
    PURGE = 0
    REFRESH = 1


class Match(IntEnum):
    EXACT = 0
    PREFIX = 1


NACK_NEED_META = 0x01  # the receiver lacks the OBJECT_META of object_id
NACK_INVAL = 0x02  # object_id names an INVALIDATE (by its id) the receiver missed

_B_META = struct.Struct("!IQIIH32s")  # object_id, total_size, chunk_size, n_chunks, status, sha256
_B_DATA = struct.Struct("!IIQQH")  # object_id, chunk_index, offset, total_size, data_len
_B_MANIFEST = struct.Struct("!IH")  # manifest_id, count
_B_MENTRY = struct.Struct("!IQ32s")  # object_id, size, sha256 (+ path)
_B_NACK = struct.Struct("!IIBH")  # target sender id, object_id, flags, range count
_B_RANGE = struct.Struct("!II")  # first chunk, end chunk (exclusive)
_B_INVAL = struct.Struct("!IBQH")  # inval_id, action, sent_at_us, count
_B_IENTRY = struct.Struct("!B")  # match (+ path)
_B_HB = struct.Struct("!QIB4sdQdI")  # ts_us, interval_ms, role, addr, rps, bytes, fill, objects (+ name)
_B_REPORT = struct.Struct("!QIH")  # ts_us, next_id, n_objects
_B_ROBJ = struct.Struct("!II")  # object_id, n_chunks
_B_U16 = struct.Struct("!H")
_B_U32 = struct.Struct("!I")


class WireError(ValueError):
    """A datagram that is not a valid message; ``reason`` is a short counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class ObjectMeta:
    object_id: int
    path: str
    total_size: int
    chunk_size: int
    n_chunks: int
    digest: bytes  # SHA-256 of the body
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    TYPE = MsgType.OBJECT_META


@dataclass(frozen=True)
class ObjectData:
    object_id: int
    chunk_index: int
    offset: int
    total_size: int
    data: bytes
    TYPE = MsgType.OBJECT_DATA


@dataclass(frozen=True)
class Repair(ObjectData):
    TYPE = MsgType.REPAIR


@dataclass(frozen=True)
class ManifestEntry:
    object_id: int
    path: str
    size: int
    digest: bytes


@dataclass(frozen=True)
class Manifest:
    manifest_id: int
    entries: tuple[ManifestEntry, ...]
    TYPE = MsgType.MANIFEST


@dataclass(frozen=True)
class Nack:
    target: int  # sender id the NACK is addressed to
    object_id: int
    flags: int = 0
    ranges: tuple[tuple[int, int], ...] = ()  # [first, end) chunk ranges
    TYPE = MsgType.NACK


@dataclass(frozen=True)
class Invalidate:
    inval_id: int
    action: InvalAction
    sent_at_us: int
    entries: tuple[tuple[Match, str], ...]
    TYPE = MsgType.INVALIDATE


@dataclass(frozen=True)
class Heartbeat:
    name: str
    role: Role
    timestamp_us: int
    interval_ms: int
    addr: str = "0.0.0.0"
    requests_per_s: float = 0.0
    bytes_served: int = 0
    cache_fill: float = 0.0  # 0..1
    cache_objects: int = 0
    TYPE = MsgType.HEARTBEAT


@dataclass(frozen=True)
class SenderReport:
    timestamp_us: int
    next_id: int  # ids below this were issued (objects, manifests, invalidations share one counter)
    objects: tuple[tuple[int, int], ...]  # (object_id, n_chunks) still retained for repair
    invals: tuple[int, ...]  # retained invalidation ids
    TYPE = MsgType.SENDER_REPORT


Message = ObjectMeta | ObjectData | Repair | Manifest | Nack | Invalidate | Heartbeat | SenderReport

#: Control messages: receivers act on them once per transmission, so each passes an anti-replay window
#: (:mod:`contract.replay_window`, RFC 4303 §3.4.3) after its tag is verified. Content (META, DATA,
#: REPAIR, MANIFEST) is idempotent: chunks are deduplicated and every object is digest-checked.
CONTROL_TYPES = frozenset({MsgType.NACK, MsgType.INVALIDATE, MsgType.HEARTBEAT, MsgType.SENDER_REPORT})


def send_time_us(msg: Message) -> int | None:
    """The sender's wall-clock transmission time carried by ``msg`` (HEARTBEAT, SENDER_REPORT), else None.

    An INVALIDATE's ``sent_at_us`` is its first issue time: its repeats and repairs carry the same value,
    so it does not order transmissions."""
    if isinstance(msg, Heartbeat | SenderReport):
        return msg.timestamp_us
    return None


@dataclass(frozen=True)
class Header:
    type: MsgType
    session_id: int
    sender_id: int
    seq: int
    length: int
    flags: int
    tag: bytes


# ---------------------------------------------------------------------------------------------- helpers


def _str(s: str, what: str, limit: int = MAX_PATH) -> bytes:
    b = s.encode("utf-8")
    if len(b) > min(limit, 0xFFFF):
        raise WireError("too_big", f"{what} longer than {limit} bytes")
    return _B_U16.pack(len(b)) + b


def check_path(path: str) -> str:
    """A cache path: starts with '/', no control characters; raises WireError otherwise."""
    if not path.startswith("/") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise WireError("malformed", f"bad path {path[:60]!r}")
    return path


def encode_headers(headers: dict[str, str]) -> bytes:
    out = []
    for k, v in headers.items():
        if not k or any(c in k for c in ":\r\n ") or any(c in v for c in "\r\n"):
            raise WireError("malformed", f"bad header {k!r}")
        out.append(f"{k}: {v}\r\n")
    return "".join(out).encode("utf-8")


def decode_headers(blob: bytes) -> dict[str, str]:
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("malformed", "headers are not UTF-8") from None
    out: dict[str, str] = {}
    if not text:
        return out
    if not text.endswith("\r\n"):
        raise WireError("malformed", "headers do not end in CRLF")
    for line in text[:-2].split("\r\n"):
        k, sep, v = line.partition(": ")
        if not sep or not k or any(c in k for c in ": \n\r") or "\n" in v or "\r" in v:
            raise WireError("malformed", f"bad header line {line[:60]!r}")
        out[k] = v
    return out


def n_chunks_for(total_size: int, chunk_size: int) -> int:
    return math.ceil(total_size / chunk_size) if total_size else 0


class _Reader:
    """Strict cursor over a body: every read checks the remaining length."""

    def __init__(self, buf: bytes) -> None:
        self.buf = memoryview(buf)
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise WireError(
                "malformed", f"truncated body (need {n} bytes at {self.pos}, have {len(self.buf)})"
            )
        b = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return b

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def string(self, what: str) -> str:
        (n,) = self.unpack(_B_U16)
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise WireError("malformed", f"{what} is not UTF-8") from None

    def blob(self) -> bytes:
        (n,) = self.unpack(_B_U16)
        return self.take(n)

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise WireError("malformed", f"{len(self.buf) - self.pos} trailing bytes in body")


# ---------------------------------------------------------------------------------------------- bodies


def encode_body(msg: Message) -> bytes:
    """The body bytes of ``msg`` (no header); WireError if a field is out of range for its wire width."""
    try:
        return _encode_body(msg)
    except struct.error as e:
        raise WireError("malformed", f"{type(msg).__name__}: field out of range ({e})") from None


def _encode_body(msg: Message) -> bytes:
    if isinstance(msg, ObjectMeta):
        return (
            _B_META.pack(msg.object_id, msg.total_size, msg.chunk_size, msg.n_chunks, msg.status, msg.digest)
            + _str(check_path(msg.path), "path")
            + _B_U16.pack(len(h := encode_headers(msg.headers)))
            + h
        )
    if isinstance(msg, ObjectData):  # also Repair
        return (
            _B_DATA.pack(msg.object_id, msg.chunk_index, msg.offset, msg.total_size, len(msg.data)) + msg.data
        )
    if isinstance(msg, Manifest):
        out = [_B_MANIFEST.pack(msg.manifest_id, len(msg.entries))]
        for e in msg.entries:
            out.append(_B_MENTRY.pack(e.object_id, e.size, e.digest) + _str(check_path(e.path), "path"))
        return b"".join(out)
    if isinstance(msg, Nack):
        return _B_NACK.pack(msg.target, msg.object_id, msg.flags, len(msg.ranges)) + b"".join(
            _B_RANGE.pack(a, b) for a, b in msg.ranges
        )
    if isinstance(msg, Invalidate):
        out = [_B_INVAL.pack(msg.inval_id, int(msg.action), msg.sent_at_us, len(msg.entries))]
        for m, p in msg.entries:
            out.append(_B_IENTRY.pack(int(m)) + _str(check_path(p), "path"))
        return b"".join(out)
    if isinstance(msg, Heartbeat):
        return _B_HB.pack(
            msg.timestamp_us,
            msg.interval_ms,
            int(msg.role),
            _ip4(msg.addr),
            msg.requests_per_s,
            msg.bytes_served,
            msg.cache_fill,
            msg.cache_objects,
        ) + _str(msg.name, "name", 255)
    if isinstance(msg, SenderReport):
        return (
            _B_REPORT.pack(msg.timestamp_us, msg.next_id, len(msg.objects))
            + b"".join(_B_ROBJ.pack(o, n) for o, n in msg.objects)
            + _B_U16.pack(len(msg.invals))
            + b"".join(_B_U32.pack(i) for i in msg.invals)
        )
    raise TypeError(f"not a message: {msg!r}")


def _ip4(addr: str) -> bytes:
    parts = addr.split(".")
    try:
        b = bytes(int(p) for p in parts)
    except ValueError:
        raise WireError("malformed", f"bad IPv4 address {addr!r}") from None
    if len(b) != 4:
        raise WireError("malformed", f"bad IPv4 address {addr!r}")
    return b


def _finite(x: float, what: str, lo: float = 0.0, hi: float = math.inf) -> float:
    if not math.isfinite(x) or not lo <= x <= hi:
        raise WireError("malformed", f"{what} out of range: {x}")
    return x


def decode_body(mtype: MsgType, body: bytes) -> Message:
    """Parse and validate one body; raises WireError('malformed', ...) on any inconsistency."""
    r = _Reader(body)
    msg: Message
    if mtype is MsgType.OBJECT_META:
        oid, total, csize, n, status, digest = r.unpack(_B_META)
        path = check_path(r.string("path"))
        headers = decode_headers(r.blob())
        if csize == 0 or csize > MAX_DATAGRAM or n != n_chunks_for(total, csize):
            raise WireError("malformed", f"META sizes inconsistent (size {total}, chunk {csize}, n {n})")
        if not 100 <= status <= 599:
            raise WireError("malformed", f"bad status {status}")
        msg = ObjectMeta(oid, path, total, csize, n, digest, status, headers)
    elif mtype in (MsgType.OBJECT_DATA, MsgType.REPAIR):
        oid, idx, off, total, dlen = r.unpack(_B_DATA)
        data = r.take(dlen)
        if dlen == 0 or off + dlen > total:
            raise WireError("malformed", f"chunk {idx} [{off}, {off + dlen}) outside object of {total} bytes")
        cls = Repair if mtype is MsgType.REPAIR else ObjectData
        msg = cls(oid, idx, off, total, data)
    elif mtype is MsgType.MANIFEST:
        mid, count = r.unpack(_B_MANIFEST)
        entries = []
        for _ in range(count):
            oid, size, digest = r.unpack(_B_MENTRY)
            entries.append(ManifestEntry(oid, check_path(r.string("path")), size, digest))
        msg = Manifest(mid, tuple(entries))
    elif mtype is MsgType.NACK:
        target, oid, flags, count = r.unpack(_B_NACK)
        ranges = tuple(r.unpack(_B_RANGE) for _ in range(count))
        if flags & ~(NACK_NEED_META | NACK_INVAL) or any(a >= b for a, b in ranges):
            raise WireError("malformed", "NACK with unknown flags or empty range")
        if not ranges and not flags:
            raise WireError("malformed", "NACK asks for nothing")
        msg = Nack(target, oid, flags, ranges)
    elif mtype is MsgType.INVALIDATE:
        iid, action, sent, count = r.unpack(_B_INVAL)
        if action not in InvalAction._value2member_map_:
            raise WireError("malformed", f"unknown invalidation action {action}")
        entries = []
        for _ in range(count):
            (m,) = r.unpack(_B_IENTRY)
            if m not in Match._value2member_map_:
                raise WireError("malformed", f"unknown match kind {m}")
            entries.append((Match(m), check_path(r.string("path"))))
        if not entries:
            raise WireError("malformed", "INVALIDATE without paths")
        msg = Invalidate(iid, InvalAction(action), sent, tuple(entries))
    elif mtype is MsgType.HEARTBEAT:
        ts, interval, role, addr, rps, nbytes, fill, nobj = r.unpack(_B_HB)
        name = r.string("name")
        if role not in Role._value2member_map_ or not name or interval == 0:
            raise WireError("malformed", "HEARTBEAT with unknown role, empty name or zero interval")
        msg = Heartbeat(
            name,
            Role(role),
            ts,
            interval,
            ".".join(str(b) for b in addr),
            _finite(rps, "requests_per_s"),
            nbytes,
            _finite(fill, "cache_fill", 0.0, 1.0),
            nobj,
        )
    elif mtype is MsgType.SENDER_REPORT:
        ts, next_id, nobj = r.unpack(_B_REPORT)
        objects = tuple(r.unpack(_B_ROBJ) for _ in range(nobj))
        (ninv,) = r.unpack(_B_U16)
        invals = tuple(r.unpack(_B_U32)[0] for _ in range(ninv))
        msg = SenderReport(ts, next_id, objects, invals)
    else:  # pragma: no cover - MsgType is exhaustive
        raise WireError("malformed", f"unknown type {mtype}")
    r.end()
    return msg


# ---------------------------------------------------------------------------------------------- datagrams


def compute_tag(header_zero_tag: bytes, body: bytes, key: bytes | None) -> bytes:
    """HMAC-SHA-256 (keyed) or SHA-256 (unkeyed) over header-with-zero-tag + body, truncated to 16 bytes."""
    if key:
        return hmac.new(key, header_zero_tag + body, hashlib.sha256).digest()[:TAG_LEN]
    return hashlib.sha256(header_zero_tag + body).digest()[:TAG_LEN]


def encode(msg: Message, *, session_id: int, sender_id: int, seq: int, key: bytes | None = None) -> bytes:
    """One datagram: header + body, tagged."""
    body = encode_body(msg)
    if len(body) + HEADER_LEN > MAX_DATAGRAM:
        raise WireError("too_big", f"{msg.TYPE.name} of {len(body)} bytes does not fit a datagram")
    flags = FLAG_KEYED if key else 0
    hdr0 = HEADER.pack(
        MAGIC, VERSION, int(msg.TYPE), session_id, sender_id, seq & 0xFFFFFFFF, len(body), flags, bytes(16)
    )
    tag = compute_tag(hdr0, body, key)
    return hdr0[:-TAG_LEN] + tag + body


def decode_header(data: bytes) -> Header:
    if len(data) < HEADER_LEN:
        raise WireError("malformed", f"datagram of {len(data)} bytes is shorter than the header")
    magic, ver, mtype, session, sender, seq, length, flags, tag = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError("malformed", f"bad magic 0x{magic:04x}")
    if ver != VERSION:
        raise WireError("version", f"unsupported version {ver}")
    if mtype not in MsgType._value2member_map_:
        raise WireError("malformed", f"unknown message type {mtype}")
    if length != len(data) - HEADER_LEN:
        raise WireError("malformed", f"length field {length} but body has {len(data) - HEADER_LEN} bytes")
    if flags & ~FLAG_KEYED:
        raise WireError("malformed", f"unknown flags 0x{flags:04x}")
    return Header(MsgType(mtype), session, sender, seq, length, flags, tag)


def decode(data: bytes, key: bytes | None = None) -> tuple[Header, Message]:
    """Verify and parse one datagram. Raises WireError: ``malformed``, ``version`` or ``auth``."""
    h = decode_header(data)
    if bool(key) != bool(h.flags & FLAG_KEYED):
        raise WireError("auth", "keyed tag expected" if key else "keyed tag but no key configured")
    hdr0 = data[: HEADER_LEN - TAG_LEN] + bytes(TAG_LEN)
    if not hmac.compare_digest(compute_tag(hdr0, data[HEADER_LEN:], key), h.tag):
        raise WireError("auth", "tag does not match (forged or corrupted)")
    return h, decode_body(h.type, data[HEADER_LEN:])


class Codec:
    """Encodes with one (session, sender, key) and a running sequence number; decodes with the same key."""

    def __init__(self, session_id: int, sender_id: int, key: bytes | None = None) -> None:
        self.session_id = session_id
        self.sender_id = sender_id
        self.key = key or None
        self.seq = 0

    def encode(self, msg: Message) -> bytes:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return encode(msg, session_id=self.session_id, sender_id=self.sender_id, seq=self.seq, key=self.key)

    def decode(self, data: bytes) -> tuple[Header, Message]:
        return decode(data, self.key)


def key_bytes(key: str | None) -> bytes | None:
    """Config keys are text; an empty key means 'no key'."""
    return key.encode("utf-8") if key else None


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
