"""The multicast wire codec: every message type round-trips; every bad datagram is rejected with a reason."""

from __future__ import annotations

import math
import random
import struct

import pytest

from contract import mcast_wire as wire
from contract.mcast_wire import InvalAction, Match, Role, WireError

DIGEST = wire.sha256(b"hello")

MESSAGES: list[wire.Message] = [
    wire.ObjectMeta(
        7, "/img/a b.png", 2500, 1200, 3, DIGEST, 200, {"Content-Type": "image/png", "ETag": '"x"'}
    ),
    wire.ObjectMeta(8, "/empty", 0, 1200, 0, wire.sha256(b""), 404, {}),
    wire.ObjectData(7, 2, 2400, 2500, b"z" * 100),
    wire.Repair(7, 0, 0, 2500, b"r" * 1200),
    wire.Manifest(3, (wire.ManifestEntry(4, "/a", 10, DIGEST), wire.ManifestEntry(5, "/ü/b", 0, DIGEST))),
    wire.Manifest(9, ()),
    wire.Nack(0xDEADBEEF, 7, wire.NACK_NEED_META, ((0, 2), (5, 9))),
    wire.Nack(1, 12, wire.NACK_INVAL, ()),
    wire.Invalidate(
        12, InvalAction.PURGE, 1_700_000_000_000_000, ((Match.EXACT, "/a"), (Match.PREFIX, "/img/"))
    ),
    wire.Invalidate(13, InvalAction.REFRESH, 5, ((Match.EXACT, "/b"),)),
    wire.Heartbeat("edge-eu-1", Role.EDGE, 123456, 500, "10.0.1.2", 42.5, 10**9, 0.75, 1234),
    wire.SenderReport(99, 40, ((7, 3), (8, 0)), (12, 13)),
    wire.SenderReport(1, 1, (), ()),
]


@pytest.mark.parametrize("key", [None, b"secret"])
@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: wire.Message, key: bytes | None) -> None:
    data = wire.encode(msg, session_id=5, sender_id=0xABCDEF01, seq=77, key=key)
    h, back = wire.decode(data, key)
    assert back == msg and type(back) is type(msg)
    assert (h.type, h.session_id, h.sender_id, h.seq) == (msg.TYPE, 5, 0xABCDEF01, 77)
    assert h.length == len(data) - wire.HEADER_LEN
    assert bool(h.flags & wire.FLAG_KEYED) == bool(key)


def test_header_layout_is_fixed() -> None:
    data = wire.encode(MESSAGES[2], session_id=1, sender_id=2, seq=3)
    magic, ver, typ, sess, snd, seq, length, flags = struct.unpack_from("!HBBIIIHH", data)
    assert (magic, ver, typ, sess, snd, seq, flags) == (0xCD4D, 1, 2, 1, 2, 3, 0)
    assert wire.HEADER_LEN == 36 and length == len(data) - 36


def test_codec_numbers_packets() -> None:
    c = wire.Codec(1, 2)
    seqs = [wire.decode(c.encode(MESSAGES[2]))[0].seq for _ in range(3)]
    assert seqs == [1, 2, 3]


def _reason(data: bytes, key: bytes | None = None) -> str:
    with pytest.raises(WireError) as ei:
        wire.decode(data, key)
    return ei.value.reason


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_truncation_is_rejected(msg: wire.Message) -> None:
    data = wire.encode(msg, session_id=1, sender_id=2, seq=3)
    for n in range(len(data)):
        assert _reason(data[:n]) == "malformed"


def test_every_bit_flip_is_rejected() -> None:
    data = wire.encode(MESSAGES[0], session_id=1, sender_id=2, seq=3, key=b"k")
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x10
        assert _reason(bytes(bad), b"k") in ("malformed", "auth", "version")


def test_keys_must_match() -> None:
    keyed = wire.encode(MESSAGES[2], session_id=1, sender_id=2, seq=3, key=b"right")
    plain = wire.encode(MESSAGES[2], session_id=1, sender_id=2, seq=3)
    assert _reason(keyed, b"wrong") == "auth"
    assert _reason(keyed, None) == "auth"  # cannot verify a keyed tag
    assert _reason(plain, b"right") == "auth"  # a keyed receiver refuses unauthenticated traffic
    # without the key, a forger can recompute a plain digest but not the HMAC
    forged = bytearray(keyed)
    forged[-1] ^= 1
    assert _reason(bytes(forged), b"right") == "auth"


def _retag(header_fields: tuple, body: bytes, key: bytes | None = None) -> bytes:
    """A datagram with any header values and body, but a correct tag: exercises the body validation."""
    magic, ver, typ, flags = header_fields
    hdr0 = wire.HEADER.pack(magic, ver, typ, 1, 2, 3, len(body) & 0xFFFF, flags, bytes(16))
    return hdr0[:-16] + wire.compute_tag(hdr0, body, key) + body


def test_bad_header_fields() -> None:
    body = wire.encode_body(MESSAGES[2])
    assert _reason(_retag((0xBEEF, 1, 2, 0), body)) == "malformed"
    assert _reason(_retag((wire.MAGIC, 2, 2, 0), body)) == "version"
    assert _reason(_retag((wire.MAGIC, 1, 99, 0), body)) == "malformed"
    assert _reason(_retag((wire.MAGIC, 1, 2, 0x8000), body)) == "malformed"
    good = _retag((wire.MAGIC, 1, 2, 0), body)
    assert _reason(good + b"\x00") == "malformed"  # length field disagrees with the datagram


@pytest.mark.parametrize(
    "typ,body,why",
    [
        (2, wire._B_DATA.pack(1, 0, 100, 50, 1) + b"x", "chunk beyond the object"),
        (2, wire._B_DATA.pack(1, 0, 0, 50, 0), "empty chunk"),
        (1, wire._B_META.pack(1, 2500, 1200, 2, 200, DIGEST) + b"\x00\x01/\x00\x00", "n_chunks wrong"),
        (1, wire._B_META.pack(1, 10, 0, 0, 200, DIGEST) + b"\x00\x01/\x00\x00", "chunk size 0"),
        (1, wire._B_META.pack(1, 10, 10, 1, 999, DIGEST) + b"\x00\x01/\x00\x00", "bad status"),
        (1, wire._B_META.pack(1, 10, 10, 1, 200, DIGEST) + b"\x00\x01a\x00\x00", "path without /"),
        (1, wire._B_META.pack(1, 10, 10, 1, 200, DIGEST) + b"\x00\x01/\x00\x03a\r\n", "bad header line"),
        (1, wire._B_META.pack(1, 10, 10, 1, 200, DIGEST) + b"\x00\x02\xff\xfe\x00\x00", "path not UTF-8"),
        (4, wire._B_NACK.pack(1, 1, 0, 1) + wire._B_RANGE.pack(5, 5), "empty range"),
        (4, wire._B_NACK.pack(1, 1, 0, 0), "asks for nothing"),
        (4, wire._B_NACK.pack(1, 1, 0x80, 0), "unknown flag"),
        (6, wire._B_INVAL.pack(1, 7, 0, 1) + b"\x00\x00\x01/", "unknown action"),
        (6, wire._B_INVAL.pack(1, 0, 0, 0), "no paths"),
        (6, wire._B_INVAL.pack(1, 0, 0, 1) + b"\x09\x00\x01/", "unknown match"),
        (7, wire._B_HB.pack(1, 1000, 1, b"\0" * 4, math.nan, 0, 0.5, 0) + b"\x00\x01e", "NaN load"),
        (7, wire._B_HB.pack(1, 1000, 1, b"\0" * 4, 1.0, 0, 1.5, 0) + b"\x00\x01e", "fill > 1"),
        (7, wire._B_HB.pack(1, 1000, 77, b"\0" * 4, 1.0, 0, 0.5, 0) + b"\x00\x01e", "unknown role"),
        (7, wire._B_HB.pack(1, 1000, 1, b"\0" * 4, 1.0, 0, 0.5, 0) + b"\x00\x00", "empty name"),
        (8, wire._B_REPORT.pack(1, 1, 0) + b"\x00\x00" + b"extra", "trailing bytes"),
        (3, wire._B_MANIFEST.pack(1, 2) + wire._B_MENTRY.pack(1, 1, DIGEST) + b"\x00\x01/", "count too high"),
    ],
)
def test_inconsistent_bodies_are_rejected(typ: int, body: bytes, why: str) -> None:
    assert _reason(_retag((wire.MAGIC, 1, typ, 0), body)) == "malformed", why


def test_encoder_refuses_what_the_decoder_would() -> None:
    with pytest.raises(WireError):
        wire.encode_body(wire.ObjectMeta(1, "no-slash", 0, 10, 0, DIGEST))
    with pytest.raises(WireError):  # header injection
        wire.encode_body(wire.ObjectMeta(1, "/a", 0, 10, 0, DIGEST, 200, {"X": "a\r\nSet-Cookie: x"}))
    with pytest.raises(WireError):
        wire.encode(wire.ObjectData(1, 0, 0, 70000, b"x" * 66000), session_id=1, sender_id=1, seq=1)
    with pytest.raises(WireError):
        wire.encode_body(wire.Heartbeat("e", Role.EDGE, 0, 1, "300.1.1.1"))


def test_fuzz_never_raises_anything_but_wire_error() -> None:
    """Random mutations of valid datagrams, re-tagged so the body parser is reached, and random bytes."""
    rng = random.Random(1234)
    seen_ok = 0
    for _ in range(3000):
        msg = rng.choice(MESSAGES)
        body = bytearray(wire.encode_body(msg))
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(3)
            if op == 0 and body:
                body[rng.randrange(len(body))] = rng.randrange(256)
            elif op == 1 and body:
                del body[rng.randrange(len(body)) :]
            else:
                body[rng.randrange(len(body) + 1) : 0] = rng.randbytes(rng.randrange(1, 6))
        for data in (
            _retag((wire.MAGIC, 1, int(msg.TYPE), 0), bytes(body)),
            rng.randbytes(rng.randrange(80)),
        ):
            try:
                wire.decode(data)
                seen_ok += 1
            except WireError as e:
                assert e.reason in ("malformed", "auth", "version")
    assert seen_ok > 0  # some mutations stay valid (e.g. a changed payload byte)


def test_headers_codec() -> None:
    h = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "max-age=60", "X-Empty": ""}
    assert wire.decode_headers(wire.encode_headers(h)) == h
    assert wire.decode_headers(b"") == {}
    with pytest.raises(WireError):
        wire.decode_headers(b"NoColon\r\n")
