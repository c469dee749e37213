"""Links verified by measurement (``--verify-links``): each distinct link class of a built network is
measured, and a link unlike its spec stops the build naming the link and by how much.

``tc`` showing the right qdisc (:func:`testbed.net.links.finish_links`) says a link was *configured* as
specified; this module checks that it *behaves* so. For every distinct class of shaped link (same delay
each way, rate, loss and queue) it makes a twin: two hosts ``lv<N>a``/``lv<N>b`` joined directly by a
link of the same class and link mode (no switch, so only the link is measured), and measures over it:

* RTT: the median of 10 pings against the two one-way delays, within max(1 ms, 2 %);
* with a rate up to about 24 Mbit/s: UDP probes at twice the rate
  (:func:`testbed.measure.linkmeasure.measure_queue`) give the delivered rate (within 5 %) and the queue
  (within max(1 packet, 2 %)); for faster links, or when this machine cannot send fast enough to
  overload the link, the two figures are reported as not measured, never as met;
* with loss: 5000 one-way probes, within max(1 point, 4 standard deviations).

Then the twins are removed. A class found right is not measured again in the same process and link
mode (tests build the same topologies many times). Under QEMU's TCG emulation (``CDNLAB_TIMING=coarse``) only what TCG honours is
checked: RTT never shorter than configured, rate never above the cap, loss and (for frames of 20 ms and
more) the queue by counting. The verdict of each class goes to ``results.json`` ``meta.links_verified``.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.measure import linkmeasure, linkprobe, ping

PROBE_SIZE = 1000  # payload bytes of the rate/queue probes
LOSS_PROBES = 5000
#: the probe overloads links up to about 24 Mbit/s (1042-byte frames at twice the rate); faster ones would
#: measure the probe's and the relay's packet rate, not the link: their rate and queue are reported as not
#: measured (``cdnlab bench links`` measures a fast link's rate with TCP)
MAX_PROBE_PPS = 6000
TWIN_NET = ("192.0.2.1", "192.0.2.2")  # TEST-NET-1 (RFC 5737): only ever inside the twins' namespaces


@dataclass(frozen=True)
class LinkClass:
    """What a shaped link does, the key of its class: one-way delays, rate, loss, queue (spec units)."""

    delay_ab_ms: float
    delay_ba_ms: float
    bw_mbit: float | None
    loss_pct: float
    queue_pkts: int | None

    @classmethod
    def of(cls, p: Any) -> LinkClass:
        """From a :class:`~testbed.net.spec.LinkParams`."""
        ba = p.delay_ms if p.delay_ms_ba is None else p.delay_ms_ba
        return cls(float(p.delay_ms), float(ba), p.bw_mbit, float(p.loss_pct), p.queue_pkts)

    def link_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"delay_ms": self.delay_ab_ms, "delay_ms_ba": self.delay_ba_ms}
        if self.bw_mbit:
            kw["bw"] = self.bw_mbit
        if self.loss_pct:
            kw["loss"] = self.loss_pct
        if self.queue_pkts is not None:
            kw["max_queue_size"] = self.queue_pkts
        return kw

    def describe(self) -> str:
        d = (f"{self.delay_ab_ms:g} ms" if self.delay_ab_ms == self.delay_ba_ms
             else f"{self.delay_ab_ms:g}/{self.delay_ba_ms:g} ms")
        parts = [d]
        if self.bw_mbit:
            parts.append(f"{self.bw_mbit:g} Mbit/s")
        if self.loss_pct:
            parts.append(f"{self.loss_pct:g} % loss")
        if self.queue_pkts is not None:
            parts.append(f"queue {self.queue_pkts}")
        return ", ".join(parts)


def link_classes(topo: Any) -> dict[LinkClass, list[str]]:
    """Every distinct class of shaped link in a topology, with the links of each (``"a-b"``), in spec order."""
    out: dict[LinkClass, list[str]] = {}
    for h in topo.hosts:
        if h.link.shaped:
            out.setdefault(LinkClass.of(h.link), []).append(f"{h.name}-{h.switch}")
    for ln in topo.links:
        if ln.shaped:
            out.setdefault(LinkClass.of(ln), []).append(f"{ln.a}-{ln.b}")
    return out


@dataclass
class ClassCheck:
    """The measurements of one link class and what is off (``problems``: one sentence each)."""

    link_class: str
    links: list[str]
    link_mode: str
    rtt_ms: float | None = None
    expected_rtt_ms: float | None = None
    rate_mbit: float | None = None
    queue_pkts: int | None = None
    expected_queue_pkts: int | None = None
    loss_pct: float | None = None
    not_measured: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# -- judging (pure) ---------------------------------------------------------------------------------
def judge_rtt(rtts: list[float], expected: float, exact: bool) -> str | None:
    if not rtts:
        return "no ping answered"
    med = statistics.median(rtts)
    if min(rtts) < expected - 0.5:
        return f"RTT {min(rtts):.2f} ms is shorter than the configured {expected:g} ms"
    if exact and abs(med - expected) > max(1.0, 0.02 * expected):
        return f"RTT {med:.2f} ms, expected {expected:g} ms (off by {med - expected:+.2f} ms)"
    return None


def judge_rate(rate: float, bw: float, exact: bool) -> str | None:
    if rate > 1.05 * bw or (exact and rate < 0.95 * bw):
        return f"rate {rate:.3f} Mbit/s, expected {bw:g} (off by {100 * (rate - bw) / bw:+.1f} %)"
    return None


def judge_queue(measured: int, expected: int) -> str | None:
    if abs(measured - expected) > max(1, math.floor(0.02 * expected)):
        return f"queue {measured} packets, expected {expected} (off by {measured - expected:+d})"
    return None


def judge_loss(measured: float, expected: float, n: int) -> str | None:
    sigma = 100 * math.sqrt(max(expected / 100 * (1 - expected / 100), 1e-6) / n)
    if abs(measured - expected) > max(1.0, 4 * sigma):
        return f"loss {measured:.2f} %, expected {expected:g} % (off by {measured - expected:+.2f} points)"
    return None


def exact_timing() -> bool:
    """False under QEMU's TCG (``CDNLAB_TIMING=coarse``, set by ``make test-vm``)."""
    return os.environ.get("CDNLAB_TIMING", "exact") != "coarse"


# -- measuring ---------------------------------------------------------------------------------------
_DONE: dict[tuple[LinkClass, str], ClassCheck] = {}  # found right once per process and link mode


def measure_class(cn: Any, lc: LinkClass, names: list[str], n: int, workdir: Path) -> ClassCheck:
    """Make the twin of one class in ``cn``'s network, measure it, remove it."""
    from testbed.net.links import RELAY_DELAY_LINE_PKTS, LinkShape, offloads_off

    exact = exact_timing()
    net = cn.net
    chk = ClassCheck(lc.describe(), names[:5], cn.link_mode)
    taken = {h.name for h in net.hosts}
    i = n
    while f"lv{i}a" in taken or f"lv{i}b" in taken:
        i += 1
    a, b = net.addHost(f"lv{i}a"), net.addHost(f"lv{i}b")
    cn.state.add_pids([(a.pid, f"host {a.name}"), (b.pid, f"host {b.name}")])
    link = None
    try:
        kw = lc.link_kwargs()
        link = net.addLink(a, b, cls=cn.link_class(**kw), **kw)
        for intf in (link.intf1, link.intf2):  # as the builder does for every node (bad checksums otherwise)
            offloads_off(intf.node, intf.name)
        a.setIP(TWIN_NET[0], 30, link.intf1)
        b.setIP(TWIN_NET[1], 30, link.intf2)
        a.setARP(TWIN_NET[1], link.intf2.MAC())  # static ARP: a lossy link must not lose the probes' ARP
        b.setARP(TWIN_NET[0], link.intf1.MAC())
        chk.expected_rtt_ms = lc.delay_ab_ms + lc.delay_ba_ms
        if lc.loss_pct >= 50:
            chk.not_measured.append(f"RTT (the link drops {lc.loss_pct:g} % each way)")
        else:
            rtts = ping.precise_rtts(a, TWIN_NET[1], count=10, interval=0.02)
            if rtts:
                chk.rtt_ms = round(statistics.median(rtts), 3)
            if p := judge_rtt(rtts, chk.expected_rtt_ms, exact):
                chk.problems.append(p)
        if lc.bw_mbit:
            q = LinkShape(lc.delay_ab_ms, lc.delay_ba_ms, lc.bw_mbit, lc.loss_pct, lc.queue_pkts).bottleneck_queue
            chk.expected_queue_pkts = q
            frame_s = linkprobe.frame_bytes(PROBE_SIZE) * 8 / (lc.bw_mbit * 1e6)
            cap_pps = lc.bw_mbit * 1e6 / (linkprobe.frame_bytes(PROBE_SIZE) * 8)
            try:
                if 2 * cap_pps > MAX_PROBE_PPS:
                    raise linkmeasure.CannotOverload(f"{lc.bw_mbit:g} Mbit/s is beyond the probe's "
                                                     f"{MAX_PROBE_PPS} packets/s")
                m = linkmeasure.measure_queue(a, b, TWIN_NET[1], lc.bw_mbit, lc.delay_ab_ms, q, PROBE_SIZE,
                                              workdir / f"class{i}-queue", delay_line_pkts=RELAY_DELAY_LINE_PKTS)
            except linkmeasure.CannotOverload as e:
                m = None
                chk.not_measured.append(f"queue and rate ({e})")
            achieved = m.sent_pps if m else 0.0
            if m is None:
                pass
            elif lc.loss_pct:
                chk.not_measured.append("queue and rate (the link also drops at random)")
            elif achieved < 1.15 * cap_pps:
                chk.not_measured.append(f"queue and rate (the probe reached {achieved:.0f} pps, too few to "
                                        f"overload {lc.bw_mbit:g} Mbit/s)")
            else:
                chk.rate_mbit, chk.queue_pkts = round(m.rate_mbit, 3), m.queue_pkts
                if p := judge_rate(m.rate_mbit, lc.bw_mbit, exact):
                    chk.problems.append(p)
                if exact or frame_s >= 0.02:
                    if p := judge_queue(m.queue_pkts, q):
                        chk.problems.append(p)
                else:
                    chk.not_measured.append("queue (frames shorter than this platform's timing jitter)")
        if lc.loss_pct:
            got = linkmeasure.measure_loss(a, b, TWIN_NET[1], count=LOSS_PROBES, workdir=workdir / f"class{i}-loss")
            chk.loss_pct = round(got, 3)
            if p := judge_loss(got, lc.loss_pct, LOSS_PROBES):
                chk.problems.append(p)
    except (RuntimeError, OSError, ValueError) as e:
        chk.problems.append(f"could not be measured: {e}")
    finally:
        if link is not None:
            net.delLink(link)
        for h in (a, b):
            pid = h.pid
            net.delHost(h)
            cn.state.forget_pid(pid)
    return chk


def verify(cn: Any) -> list[ClassCheck]:
    """Measure every link class of a started :class:`~testbed.net.build.CdnNet` (each once per process and
    link mode). Returns the checks; the caller raises on any with problems."""
    workdir = Path(cn.run_dir) / "linkverify"
    workdir.mkdir(parents=True, exist_ok=True)
    out = []
    for n, (lc, names) in enumerate(link_classes(cn.topo).items(), start=1):
        key = (lc, cn.link_mode)
        chk = _DONE.get(key) or measure_class(cn, lc, names, n, workdir)
        if chk.ok:  # a class found off is measured again next time (it may have been a busy moment)
            _DONE[key] = chk
        out.append(chk if chk.links == names[:5] else ClassCheck(**{**asdict(chk), "links": names[:5]}))
    return out


def summary(checks: list[ClassCheck]) -> dict[str, Any]:
    """For ``results.json`` ``meta.links_verified``."""
    return {"classes": len(checks), "ok": all(c.ok for c in checks),
            "checks": [asdict(c) for c in checks]}


def failure(checks: list[ClassCheck]) -> str | None:
    """One message naming every link class that is off, its links and by how much; None if all are fine."""
    bad = [c for c in checks if not c.ok]
    if not bad:
        return None
    lines = [f"  {c.link_class} ({', '.join(c.links)}; {c.link_mode}): {'; '.join(c.problems)}" for c in bad]
    return "links unlike their spec, measured on a twin of each class:\n" + "\n".join(lines)
