"""Scapy layers: every multicast message type and ICPv2 build, serialise and parse, and agree with the codecs."""

from __future__ import annotations

import socket
import struct

import pytest
from scapy.layers.inet import IP, UDP
from scapy.packet import Packet, Raw

from contract import mcast_wire as wire
from contract.mcast_wire import InvalAction, Match, Role
from testbed.measure import layers as L

D = wire.sha256(b"body")


def _scapy_body(msg: wire.Message) -> Packet:
    """The Scapy body layer holding the same field values as ``msg``."""
    if isinstance(msg, wire.ObjectMeta):
        return L.McastObjectMeta(
            object_id=msg.object_id,
            total_size=msg.total_size,
            chunk_size=msg.chunk_size,
            n_chunks=msg.n_chunks,
            status=msg.status,
            digest=msg.digest,
            path=msg.path.encode(),
            headers=wire.encode_headers(msg.headers),
        )
    if isinstance(msg, wire.ObjectData):
        cls = L.McastRepair if isinstance(msg, wire.Repair) else L.McastObjectData
        return cls(
            object_id=msg.object_id,
            chunk_index=msg.chunk_index,
            offset=msg.offset,
            total_size=msg.total_size,
            data=msg.data,
        )
    if isinstance(msg, wire.Manifest):
        return L.McastManifest(
            manifest_id=msg.manifest_id,
            entries=[
                L.ManifestEntry(object_id=e.object_id, size=e.size, digest=e.digest, path=e.path.encode())
                for e in msg.entries
            ],
        )
    if isinstance(msg, wire.Nack):
        return L.McastNack(
            target=msg.target,
            object_id=msg.object_id,
            flags=msg.flags,
            ranges=[L.NackRange(first=a, end=b) for a, b in msg.ranges],
        )
    if isinstance(msg, wire.Invalidate):
        return L.McastInvalidate(
            inval_id=msg.inval_id,
            action=int(msg.action),
            sent_at_us=msg.sent_at_us,
            entries=[L.InvalEntry(match=int(m), path=p.encode()) for m, p in msg.entries],
        )
    if isinstance(msg, wire.Heartbeat):
        return L.McastHeartbeat(
            timestamp_us=msg.timestamp_us,
            interval_ms=msg.interval_ms,
            role=int(msg.role),
            addr=msg.addr,
            requests_per_s=msg.requests_per_s,
            bytes_served=msg.bytes_served,
            cache_fill=msg.cache_fill,
            cache_objects=msg.cache_objects,
            node_name=msg.name.encode(),
        )
    assert isinstance(msg, wire.SenderReport)
    return L.McastSenderReport(
        timestamp_us=msg.timestamp_us,
        next_id=msg.next_id,
        objects=[L.ReportObject(object_id=o, n_chunks=n) for o, n in msg.objects],
        invals=list(msg.invals),
    )


MESSAGES: list[wire.Message] = [
    wire.ObjectMeta(7, "/a/b.css", 2500, 1200, 3, D, 200, {"Content-Type": "text/css"}),
    wire.ObjectData(7, 1, 1200, 2500, b"x" * 1200),
    wire.Repair(7, 2, 2400, 2500, b"y" * 100),
    wire.Manifest(3, (wire.ManifestEntry(4, "/a", 10, D), wire.ManifestEntry(5, "/b", 20, D))),
    wire.Nack(0x1234, 7, wire.NACK_NEED_META, ((0, 1), (2, 3))),
    wire.Invalidate(
        12, InvalAction.REFRESH, 1_700_000_000_123_456, ((Match.EXACT, "/a"), (Match.PREFIX, "/img/"))
    ),
    wire.Heartbeat("edge-1", Role.EDGE, 99, 1000, "10.0.0.7", 12.25, 123456, 0.5, 42),
    wire.SenderReport(5, 20, ((7, 3), (9, 1)), (12, 13, 14)),
]


@pytest.mark.parametrize("key", [None, b"k3y"])
@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_scapy_bytes_equal_codec_bytes(msg: wire.Message, key: bytes | None) -> None:
    ours = wire.encode(msg, session_id=9, sender_id=0xCAFE, seq=41, key=key)
    pkt = L.CDNMcast(session_id=9, sender_id=0xCAFE, seq=41) / _scapy_body(msg)
    theirs = L.signed(pkt, key) if key else bytes(pkt)
    assert theirs == ours
    # and the codec parses what Scapy built
    h, back = wire.decode(theirs, key)
    assert back == msg and h.seq == 41


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_scapy_dissects_codec_bytes(msg: wire.Message) -> None:
    data = wire.encode(msg, session_id=3, sender_id=4, seq=5)
    p = L.CDNMcast(data)
    assert p.magic == wire.MAGIC and p.type == int(msg.TYPE) and p.length == len(data) - wire.HEADER_LEN
    body = p.payload
    assert type(body) is type(_scapy_body(msg))
    assert not isinstance(body.payload, Raw)  # nothing left undissected
    assert bytes(p) == data  # re-serialising a dissected packet reproduces it
    if isinstance(msg, wire.ObjectMeta):
        assert body.path == msg.path.encode() and body.digest == msg.digest
    if isinstance(msg, wire.SenderReport):
        assert [(o.object_id, o.n_chunks) for o in body.objects] == list(msg.objects)
        assert body.invals == list(msg.invals)
    if isinstance(msg, wire.Heartbeat):
        assert body.node_name == b"edge-1" and body.addr == "10.0.0.7" and body.cache_fill == 0.5


def test_udp_ports_are_bound() -> None:
    data = wire.encode(MESSAGES[6], session_id=1, sender_id=1, seq=1)
    for port in (wire.DATA_PORT, wire.CONTROL_PORT):
        raw = bytes(IP(src="10.0.0.1", dst="239.255.40.2") / UDP(sport=40000, dport=port) / data)
        assert IP(raw).haslayer(L.McastHeartbeat)
    L.bind_mcast_layers(17400)
    raw = bytes(IP(dst="239.1.1.1") / UDP(sport=17400, dport=17400) / data)
    assert IP(raw)[L.CDNMcast].type == int(wire.MsgType.HEARTBEAT)


# ---------------------------------------------------------------------------------------------- ICP


def test_icp_query_matches_rfc2186_layout() -> None:
    url = b"http://origin.cdn.test/img/1.png"
    pkt = L.ICP(
        opcode=1,
        reqnum=0x01020304,
        options=0x80000000,
        option_data=7,
        sender="10.0.0.2",
        requester="10.0.0.9",
        url=url,
    )
    expected = (
        struct.pack(
            "!BBHIII4s4s",
            1,
            2,
            20 + 4 + len(url) + 1,
            0x01020304,
            0x80000000,
            7,
            socket.inet_aton("10.0.0.2"),
            socket.inet_aton("10.0.0.9"),
        )
        + url
        + b"\x00"
    )
    assert bytes(pkt) == expected
    back = L.ICP(expected)
    assert (back.opcode, back.version, back.length, back.reqnum) == (1, 2, len(expected), 0x01020304)
    assert (back.sender, back.requester, back.url) == ("10.0.0.2", "10.0.0.9", url)


@pytest.mark.parametrize("opcode", [2, 3, 4, 10, 11, 21, 22])
def test_icp_replies_carry_only_the_url(opcode: int) -> None:
    url = b"http://o/x"
    expected = struct.pack("!BBHIIII", opcode, 2, 20 + len(url) + 1, 9, 0, 0, 0) + url + b"\x00"
    assert bytes(L.ICP(opcode=opcode, reqnum=9, url=url)) == expected
    back = L.ICP(expected)
    assert back.url == url and back.length == len(expected) and back.requester is None


def test_icp_hit_obj_and_port_binding() -> None:
    url, obj = b"http://o/small", b"tiny object"
    pkt = L.ICP(opcode=23, reqnum=1, options=L.ICP_FLAG_HIT_OBJ, url=url, obj=obj)
    raw = bytes(pkt)
    assert raw[20:] == url + b"\x00" + struct.pack("!H", len(obj)) + obj
    assert struct.unpack_from("!H", raw, 2)[0] == len(raw)
    frame = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=3130, dport=3130) / pkt)
    assert IP(frame)[L.ICP].obj == obj


def test_icp_agrees_with_the_edge_codec() -> None:
    icp = pytest.importorskip("testbed.services.icp")
    msg = icp.IcpMessage(icp.Op.QUERY, 77, "http://o/a", sender=0x0A000001, requester=0x0A000002)
    data = msg.encode()
    p = L.ICP(data)
    assert (p.opcode, p.reqnum, p.url, p.sender, p.requester) == (
        1,
        77,
        b"http://o/a",
        "10.0.0.1",
        "10.0.0.2",
    )
    assert (
        bytes(L.ICP(opcode=1, reqnum=77, sender="10.0.0.1", requester="10.0.0.2", url=b"http://o/a")) == data
    )
    assert icp.IcpMessage.decode(bytes(L.ICP(opcode=3, reqnum=5, url=b"http://o/b"))).url == "http://o/b"


def test_the_tutorials_scapy_step_works_as_written(tmp_path) -> None:
    """docs/tutorial.md: `from testbed.measure.layers import *; rdpcap("...pcap")`."""
    pcap = tmp_path / "capture.pcap"
    ns: dict = {}
    exec("from testbed.measure.layers import *", ns)  # noqa: S102 - the tutorial's own line
    ns["wrpcap"](str(pcap), [ns["Ether"]() / ns["IP"](dst="10.0.0.200") / ns["TCP"](dport=80)])
    pkts = eval(f"rdpcap({str(pcap)!r})", ns)  # noqa: S307
    assert len(pkts) == 1 and pkts[0][ns["TCP"]].dport == 80
