"""Scapy layers for cdnlab's own protocols, so captures of the testbed dissect in Scapy.

- :class:`CDNMcast` and one body layer per message type of :mod:`contract.mcast_wire`
  (OBJECT_META, OBJECT_DATA, MANIFEST, NACK, REPAIR, INVALIDATE, HEARTBEAT, SENDER_REPORT), bound to the
  ingest and control UDP ports (7400, 7401 by default; :func:`bind_mcast_layers` adds others).
  ``bytes(layer)`` is byte-for-byte what the codec in ``wire`` produces: ``length`` and the unkeyed
  SHA-256 ``tag`` are filled in when left ``None``; :func:`signed` computes the keyed HMAC tag.
- :class:`ICP`: the Internet Cache Protocol, version 2 (RFC 2186 §2): opcode, version, message length,
  request number, options, option data, sender host address, then the payload (for ICP_OP_QUERY the
  requester host address and the URL; otherwise the URL; ICP_OP_HIT_OBJ adds object size and data),
  bound to UDP port 3130 (:func:`bind_icp`).

Usage: ``from testbed.measure.layers import *`` then ``rdpcap(...)``, or ``Ether(raw)`` /
``IP(raw)``: the UDP payload on those ports dissects as these layers.
"""

from __future__ import annotations

from scapy.fields import (
    ByteEnumField,
    ByteField,
    ConditionalField,
    FieldLenField,
    FieldListField,
    FlagsField,
    IEEEDoubleField,
    IntField,
    IPField,
    LongField,
    PacketListField,
    ShortField,
    StrLenField,
    StrNullField,
    XIntField,
    XShortField,
    XStrFixedLenField,
)
from scapy.layers.dns import DNS
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, bind_layers
from scapy.utils import rdpcap, wrpcap

from contract import mcast_wire as wire

__all__ = [
    # what a student needs next to cdnlab's layers to read a capture (docs/tutorial.md: `capture`)
    "DNS",
    "IP",
    "TCP",
    "UDP",
    "Ether",
    "rdpcap",
    "wrpcap",
    "CDNMcast",
    "ICP",
    "McastHeartbeat",
    "McastInvalidate",
    "McastManifest",
    "McastNack",
    "McastObjectData",
    "McastObjectMeta",
    "McastRepair",
    "McastSenderReport",
    "ICP_OPCODES",
    "InvalEntry",
    "ManifestEntry",
    "NackRange",
    "ReportObject",
    "bind_icp",
    "bind_mcast_layers",
    "signed",
]

MSG_TYPES = {t.value: t.name for t in wire.MsgType}
ROLES = {r.value: r.name.lower() for r in wire.Role}
_TAG_OFF = wire.HEADER_LEN - wire.TAG_LEN  # 20


class CDNMcast(Packet):
    """The 36-byte common header of every cdnlab multicast message (see :mod:`contract.mcast_wire`)."""

    name = "CDNMcast"
    fields_desc = [
        XShortField("magic", wire.MAGIC),
        ByteField("version", wire.VERSION),
        ByteEnumField("type", 1, MSG_TYPES),
        XIntField("session_id", 0),
        XIntField("sender_id", 0),
        IntField("seq", 0),
        ShortField("length", None),
        FlagsField("flags", 0, 16, ["KEYED"]),
        XStrFixedLenField("tag", None, wire.TAG_LEN),
    ]

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        if self.length is None:
            p = p[:16] + len(pay).to_bytes(2, "big") + p[18:]
        if self.tag is None:  # unkeyed digest (keyed: use signed())
            p = (
                p[:_TAG_OFF]
                + wire.compute_tag(p[:_TAG_OFF] + bytes(wire.TAG_LEN), pay, None)
                + p[wire.HEADER_LEN :]
            )
        return p + pay

    def mysummary(self) -> str:
        return self.sprintf("CDNMcast %type% session=%session_id% sender=%sender_id% seq=%seq%")


def signed(pkt: Packet, key: bytes) -> bytes:
    """Bytes of ``pkt`` (a CDNMcast, possibly under IP/UDP) with the KEYED flag set and the HMAC tag computed."""
    m = pkt.getlayer(CDNMcast)
    m.flags = int(m.flags) | wire.FLAG_KEYED
    m.tag = bytes(wire.TAG_LEN)
    raw = bytes(m)
    tag = wire.compute_tag(raw[:_TAG_OFF] + bytes(wire.TAG_LEN), raw[wire.HEADER_LEN :], key)
    m.tag = tag
    return bytes(pkt)


class _Sub(Packet):
    """A list element: it has no payload, the rest belongs to the enclosing list."""

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


def _path_fields() -> list:
    return [
        FieldLenField("path_len", None, length_of="path", fmt="!H"),
        StrLenField("path", b"/", length_from=lambda p: p.path_len),
    ]


class McastObjectMeta(Packet):
    name = "CDNMcast OBJECT_META"
    fields_desc = [
        IntField("object_id", 0),
        LongField("total_size", 0),
        IntField("chunk_size", wire.DEFAULT_CHUNK),
        IntField("n_chunks", 0),
        ShortField("status", 200),
        XStrFixedLenField("digest", b"\x00" * 32, 32),
        *_path_fields(),
        FieldLenField("hdr_len", None, length_of="headers", fmt="!H"),
        StrLenField("headers", b"", length_from=lambda p: p.hdr_len),  # "Name: value\r\n" lines
    ]


class McastObjectData(Packet):
    name = "CDNMcast OBJECT_DATA"
    fields_desc = [
        IntField("object_id", 0),
        IntField("chunk_index", 0),
        LongField("offset", 0),
        LongField("total_size", 0),
        FieldLenField("data_len", None, length_of="data", fmt="!H"),
        StrLenField("data", b"", length_from=lambda p: p.data_len),
    ]


class McastRepair(McastObjectData):
    name = "CDNMcast REPAIR"


class ManifestEntry(_Sub):
    name = "ManifestEntry"
    fields_desc = [
        IntField("object_id", 0),
        LongField("size", 0),
        XStrFixedLenField("digest", b"\x00" * 32, 32),
    ]
    fields_desc += _path_fields()


class McastManifest(Packet):
    name = "CDNMcast MANIFEST"
    fields_desc = [
        IntField("manifest_id", 0),
        FieldLenField("count", None, count_of="entries", fmt="!H"),
        PacketListField("entries", [], ManifestEntry, count_from=lambda p: p.count),
    ]


class NackRange(_Sub):
    name = "NackRange"
    fields_desc = [IntField("first", 0), IntField("end", 1)]


class McastNack(Packet):
    name = "CDNMcast NACK"
    fields_desc = [
        XIntField("target", 0),
        IntField("object_id", 0),
        FlagsField("flags", 0, 8, ["NEED_META", "INVAL"]),
        FieldLenField("count", None, count_of="ranges", fmt="!H"),
        PacketListField("ranges", [], NackRange, count_from=lambda p: p.count),
    ]


class InvalEntry(_Sub):
    name = "InvalEntry"
    fields_desc = [ByteEnumField("match", 0, {0: "exact", 1: "prefix"}), *_path_fields()]


class McastInvalidate(Packet):
    name = "CDNMcast INVALIDATE"
    fields_desc = [
        IntField("inval_id", 0),
        ByteEnumField("action", 0, {0: "purge", 1: "refresh"}),
        LongField("sent_at_us", 0),
        FieldLenField("count", None, count_of="entries", fmt="!H"),
        PacketListField("entries", [], InvalEntry, count_from=lambda p: p.count),
    ]


class McastHeartbeat(Packet):
    name = "CDNMcast HEARTBEAT"
    fields_desc = [
        LongField("timestamp_us", 0),
        IntField("interval_ms", 1000),
        ByteEnumField("role", 1, ROLES),
        IPField("addr", "0.0.0.0"),
        IEEEDoubleField("requests_per_s", 0.0),
        LongField("bytes_served", 0),
        IEEEDoubleField("cache_fill", 0.0),
        IntField("cache_objects", 0),
        FieldLenField("name_len", None, length_of="node_name", fmt="!H"),
        StrLenField("node_name", b"", length_from=lambda p: p.name_len),
    ]


class ReportObject(_Sub):
    name = "ReportObject"
    fields_desc = [IntField("object_id", 0), IntField("n_chunks", 0)]


class McastSenderReport(Packet):
    name = "CDNMcast SENDER_REPORT"
    fields_desc = [
        LongField("timestamp_us", 0),
        IntField("next_id", 0),
        FieldLenField("n_objects", None, count_of="objects", fmt="!H"),
        PacketListField("objects", [], ReportObject, count_from=lambda p: p.n_objects),
        FieldLenField("n_invals", None, count_of="invals", fmt="!H"),
        FieldListField("invals", [], IntField("inval_id", 0), count_from=lambda p: p.n_invals),
    ]


BODY_LAYERS: dict[wire.MsgType, type[Packet]] = {
    wire.MsgType.OBJECT_META: McastObjectMeta,
    wire.MsgType.OBJECT_DATA: McastObjectData,
    wire.MsgType.MANIFEST: McastManifest,
    wire.MsgType.NACK: McastNack,
    wire.MsgType.REPAIR: McastRepair,
    wire.MsgType.INVALIDATE: McastInvalidate,
    wire.MsgType.HEARTBEAT: McastHeartbeat,
    wire.MsgType.SENDER_REPORT: McastSenderReport,
}
for _t, _cls in BODY_LAYERS.items():
    bind_layers(CDNMcast, _cls, type=int(_t))


def bind_mcast_layers(*ports: int) -> None:
    """Dissect UDP traffic to or from ``ports`` (default: the ingest and control ports) as CDNMcast."""
    for port in ports or (wire.DATA_PORT, wire.CONTROL_PORT):
        bind_layers(UDP, CDNMcast, dport=port)
        bind_layers(UDP, CDNMcast, sport=port)


# ---------------------------------------------------------------------------------------------- ICP

ICP_PORT = 3130
ICP_OPCODES = {
    0: "ICP_OP_INVALID",
    1: "ICP_OP_QUERY",
    2: "ICP_OP_HIT",
    3: "ICP_OP_MISS",
    4: "ICP_OP_ERR",
    10: "ICP_OP_SECHO",
    11: "ICP_OP_DECHO",
    21: "ICP_OP_MISS_NOFETCH",
    22: "ICP_OP_DENIED",
    23: "ICP_OP_HIT_OBJ",
}
ICP_FLAG_HIT_OBJ = 0x80000000
ICP_FLAG_SRC_RTT = 0x40000000


class ICP(Packet):
    """ICPv2 (RFC 2186 §2): a 20-byte header then the opcode's payload. ``length`` is the whole message."""

    name = "ICP"
    fields_desc = [
        ByteEnumField("opcode", 1, ICP_OPCODES),
        ByteField("version", 2),
        ShortField("length", None),
        IntField("reqnum", 0),
        XIntField("options", 0),
        XIntField("option_data", 0),
        IPField("sender", "0.0.0.0"),
        ConditionalField(IPField("requester", "0.0.0.0"), lambda p: p.opcode == 1),
        StrNullField("url", b""),
        ConditionalField(
            FieldLenField("obj_size", None, length_of="obj", fmt="!H"), lambda p: p.opcode == 23
        ),
        ConditionalField(StrLenField("obj", b"", length_from=lambda p: p.obj_size), lambda p: p.opcode == 23),
    ]

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        if self.length is None:
            p = p[:2] + (len(p) + len(pay)).to_bytes(2, "big") + p[4:]
        return p + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    def mysummary(self) -> str:
        return self.sprintf("ICP %opcode% #%reqnum% %url%")


def bind_icp(port: int = ICP_PORT) -> None:
    bind_layers(UDP, ICP, dport=port)
    bind_layers(UDP, ICP, sport=port)


bind_mcast_layers()
bind_icp()
