"""Parsing and building the few packets the controller handles itself (pure ``struct`` code, no Ryu).

Ethernet II, ARP (RFC 826), IPv4 (RFC 791, with the Router Alert option of RFC 2113 for IGMP),
TCP (RFC 9293) SYN/RST probes, ICMP echo (RFC 792), IGMPv3 queries (RFC 3376 4.1).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ETH_IP = 0x0800
ETH_ARP = 0x0806
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


class PacketError(ValueError):
    """A packet is truncated or malformed."""


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def mac_str(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def ip_bytes(ip: str | ipaddress.IPv4Address) -> bytes:
    return ipaddress.IPv4Address(ip).packed


def ip_str(b: bytes) -> str:
    return str(ipaddress.IPv4Address(b))


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@dataclass
class Packet:
    eth_dst: str
    eth_src: str
    eth_type: int
    # ARP
    arp_op: int = 0
    arp_sha: str = ""
    arp_spa: str = ""
    arp_tpa: str = ""
    # IPv4
    ip_src: str = ""
    ip_dst: str = ""
    ip_proto: int = 0
    l4: bytes = b""
    # TCP / UDP
    sport: int = 0
    dport: int = 0
    tcp_seq: int = 0
    tcp_ack: int = 0
    tcp_flags: int = 0
    # ICMP
    icmp_type: int = -1
    icmp_id: int = 0


def parse(data: bytes) -> Packet:
    """Parse Ethernet + ARP/IPv4(+TCP/UDP/ICMP); raise :class:`PacketError` if malformed."""
    if len(data) < 14:
        raise PacketError("frame shorter than an Ethernet header")
    dst, src, et = data[:6], data[6:12], struct.unpack("!H", data[12:14])[0]
    p = Packet(mac_str(dst), mac_str(src), et)
    body = data[14:]
    if et == ETH_ARP:
        if len(body) < 28:
            raise PacketError("truncated ARP")
        htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", body[:8])
        if (htype, ptype, hlen, plen) != (1, ETH_IP, 6, 4):
            raise PacketError("ARP not Ethernet/IPv4")
        p.arp_op, p.arp_sha, p.arp_spa = op, mac_str(body[8:14]), ip_str(body[14:18])
        p.arp_tpa = ip_str(body[24:28])
    elif et == ETH_IP:
        if len(body) < 20 or body[0] >> 4 != 4:
            raise PacketError("truncated or non-v4 IP header")
        ihl = (body[0] & 0xF) * 4
        total = struct.unpack("!H", body[2:4])[0]
        if ihl < 20 or len(body) < ihl or total < ihl:
            raise PacketError("bad IPv4 header length")
        p.ip_proto = body[9]
        p.ip_src, p.ip_dst = ip_str(body[12:16]), ip_str(body[16:20])
        p.l4 = body[ihl : min(total, len(body))]
        if p.ip_proto in (6, 17):
            if len(p.l4) < (20 if p.ip_proto == 6 else 8):
                raise PacketError("truncated TCP/UDP header")
            p.sport, p.dport = struct.unpack("!HH", p.l4[:4])
            if p.ip_proto == 6:
                p.tcp_seq, p.tcp_ack = struct.unpack("!II", p.l4[4:12])
                p.tcp_flags = p.l4[13]
        elif p.ip_proto == 1:
            if len(p.l4) < 8:
                raise PacketError("truncated ICMP")
            p.icmp_type = p.l4[0]
            p.icmp_id = struct.unpack("!H", p.l4[4:6])[0]
    return p


def ethernet(dst: str, src: str, eth_type: int, payload: bytes) -> bytes:
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", eth_type) + payload


def arp_reply(sha: str, spa: str, tha: str, tpa: str) -> bytes:
    """An ARP reply 'spa is-at sha' sent to (tha, tpa)."""
    body = (
        struct.pack("!HHBBH", 1, ETH_IP, 6, 4, 2)
        + mac_bytes(sha)
        + ip_bytes(spa)
        + mac_bytes(tha)
        + ip_bytes(tpa)
    )
    return ethernet(tha, sha, ETH_ARP, body)


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64, options: bytes = b"") -> bytes:
    ihl = (20 + len(options)) // 4
    hdr = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            0,
            20 + len(options) + len(payload),
            0,
            0x4000,
            ttl,
            proto,
            0,
            ip_bytes(src),
            ip_bytes(dst),
        )
        + options
    )
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + payload


def tcp(
    src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, window: int = 1024
) -> bytes:
    """A TCP segment without payload, checksummed over the IPv4 pseudo header."""
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, window, 0, 0)
    pseudo = ip_bytes(src) + ip_bytes(dst) + struct.pack("!BBH", 0, 6, len(seg))
    c = checksum(pseudo + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def tcp_packet(
    eth_src: str, eth_dst: str, src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int
) -> bytes:
    return ethernet(eth_dst, eth_src, ETH_IP, ipv4(src, dst, 6, tcp(src, dst, sport, dport, seq, ack, flags)))


def icmp_echo(eth_src: str, eth_dst: str, src: str, dst: str, ident: int, seq: int) -> bytes:
    msg = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"cdnlab-probe"
    msg = msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]
    return ethernet(eth_dst, eth_src, ETH_IP, ipv4(src, dst, 1, msg))


ROUTER_ALERT = b"\x94\x04\x00\x00"  # RFC 2113


def multicast_mac(group: str) -> str:
    """The Ethernet address of an IPv4 multicast group (RFC 1112 6.4)."""
    b = ip_bytes(group)
    return mac_str(bytes([0x01, 0x00, 0x5E, b[1] & 0x7F, b[2], b[3]]))


def igmp_query(
    eth_src: str,
    ip_src: str,
    group: str = "0.0.0.0",
    max_resp_s: float = 10.0,
    qrv: int = 2,
    qqic_s: int = 125,
) -> bytes:
    """An IGMPv3 Membership Query (RFC 3376 4.1): general (group 0.0.0.0, to 224.0.0.1) or group-specific."""
    code = max(1, min(127, int(max_resp_s * 10)))
    qqic = max(1, min(127, qqic_s))
    msg = struct.pack("!BBH4sBBH", 0x11, code, 0, ip_bytes(group), qrv & 7, qqic, 0)
    msg = msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]
    dst = "224.0.0.1" if group == "0.0.0.0" else group
    return ethernet(
        multicast_mac(dst), eth_src, ETH_IP, ipv4(ip_src, dst, 2, msg, ttl=1, options=ROUTER_ALERT)
    )
