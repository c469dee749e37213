"""Did the emulation keep up? The relays' own counters, summed into a verdict an experiment publishes.

An emulator that falls behind does not fail: it delivers late, or drops in the kernel before the relay
reads a frame, and every number measured through it is quietly wrong (an overloaded 2-core machine running
a 39-PoP graph reported 442 ms connects on paths of a few ms). So every experiment asks the relays of
each network it built for their counters before tearing it down (:func:`collect`), and :func:`assess` says
whether the emulation kept up. ``results.json`` carries the verdict in ``meta.emulation`` and the report
starts with a warning when it did not.

The emulation did not keep up when any of these holds:

* the kernel dropped frames a relay did not read in time (``socket_drops`` > 0);
* more than ``max_late_fraction`` (1 %) of frames left later than max(1 ms, 2 % of the link's delay)
  after their deadline (``late_frames``), counted over at least 100 frames (so one stray late frame among
  a few dozen is not a verdict);
* a link's mean lateness exceeds ``max_mean_late_ms`` (0.5 ms) over at least 100 frames: its delay error
  is over target;
* the machine was CPU bound (some task waiting for a CPU, Linux PSI) more than half of the network's
  lifetime: services and load generators starve before the real-time relays do, and health probes time
  out on live edges;
* the longest path between two hosts (most hops) answers pings more slowly than its links' delays add
  up to, by more than max(1 ms, 2 %) at best (:func:`probe_path_rtt`): the switches and relays add latency
  of their own, which no relay counter sees (Open vSwitch's userspace datapath with hundreds of ports adds
  milliseconds per hop). This one is measured with kernel netem too.

Kernel netem links keep their own time and are not measured here (``measured: false``). The CPU
pressure is judged on every platform that has PSI.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from testbed.measure import ping

MAX_LATE_FRACTION = 0.01
MAX_MEAN_LATE_MS = 0.5
MIN_FRAMES_FOR_FRACTION = 100  # fewer frames are judged as if there were this many (one late frame is fine)
MIN_FRAMES_FOR_MEAN = 100  # below this one late frame decides a link's mean: too few to judge its error
#: above this share of wall time with tasks waiting for a CPU, services starve (measured here: globe's quick
#: selection 29 %, a 39-PoP graph 60 % with edges falsely marked down by timed-out health probes)
MAX_CPU_PRESSURE_PCT = 50.0


@dataclass(frozen=True, slots=True)
class LinkCounters:
    """One direction of one relayed link."""

    link: str  # e.g. "s1-e1 a->b"
    frames: int  # sent on
    late_frames: int
    max_late_ms: float
    mean_late_ms: float
    socket_drops: int
    queue_drops: int  # the spec's own queue (tail drop): part of the emulated network, not a failure
    # sends that failed: the rate limiter's full queue (ENOBUFS, the spec's own tail drop) or a link down
    send_errors: int = 0

    @classmethod
    def from_relay(cls, link: str, direction: str, c: dict[str, Any]) -> LinkCounters:
        """From one direction (``a_to_b`` or ``b_to_a``) of a relay's ``counters`` JSON."""
        d = c[direction]
        return cls(link=f"{link} {direction.replace('_to_', '->')}", frames=int(d["tx"]),
                   late_frames=int(d.get("late_frames", 0)), max_late_ms=float(d.get("max_late_us", 0)) / 1000,
                   mean_late_ms=float(d.get("mean_late_us", 0)) / 1000,
                   socket_drops=int(d.get("socket_drops", 0)), queue_drops=int(d.get("queue_drop", 0)),
                   send_errors=int(d.get("tx_error", 0)))


def assess(counters: Sequence[LinkCounters], *, unmeasured_links: int = 0, missing: Sequence[str] = (),
           cpu_pressure_pct: float | None = None, realtime_refused: int = 0,
           max_late_fraction: float = MAX_LATE_FRACTION,
           max_mean_late_ms: float = MAX_MEAN_LATE_MS, max_cpu_pressure_pct: float = MAX_CPU_PRESSURE_PCT,
           ) -> dict[str, Any]:
    """The verdict (pure): totals, ``keeping_up`` (True, False, or None when nothing was measured) and
    ``problems``, one sentence each. ``missing`` names relays that gave no counters (dead or silent);
    ``cpu_pressure_pct`` is :func:`pressure_pct` over the network's lifetime; ``realtime_refused`` counts
    relay processes the kernel refused real-time priority (SCHED_FIFO): reported, and named in the
    problems only when frames also left late."""
    frames = sum(c.frames for c in counters)
    late = sum(c.late_frames for c in counters)
    drops = sum(c.socket_drops for c in counters)
    problems: list[str] = []
    if drops:
        worst = max(counters, key=lambda c: c.socket_drops)
        problems.append(f"the kernel dropped {drops} frames the relays did not read in time "
                        f"(most on {worst.link}: {worst.socket_drops})")
    # judged over at least MIN_FRAMES_FOR_FRACTION frames: among 20, one stray late wake-up would be 5 %
    if frames and late / max(frames, MIN_FRAMES_FOR_FRACTION) > max_late_fraction:
        problems.append(f"{late} of {frames} frames ({100 * late / frames:.1f} %) left late, more than "
                        f"{100 * max_late_fraction:g} % (worst {max(c.max_late_ms for c in counters):.1f} ms late)")
    slow = [c for c in counters if c.frames >= MIN_FRAMES_FOR_MEAN and c.mean_late_ms > max_mean_late_ms]
    if slow:
        worst = max(slow, key=lambda c: c.mean_late_ms)
        problems.append(f"{len(slow)} link directions were late by more than {max_mean_late_ms:g} ms on "
                        f"average (worst {worst.link}: {worst.mean_late_ms:.2f} ms)")
    if missing:
        problems.append(f"{len(missing)} relays gave no counters: {', '.join(list(missing)[:5])}")
    if realtime_refused and late:
        problems.append(f"{realtime_refused} relay processes ran without real-time priority (SCHED_FIFO was "
                        "refused): run as root on a kernel that allows it, or with fewer other processes")
    if cpu_pressure_pct is not None and cpu_pressure_pct > max_cpu_pressure_pct:
        problems.append(f"the machine was CPU bound {cpu_pressure_pct:.0f} % of the time (tasks waiting for a "
                        f"CPU, more than {max_cpu_pressure_pct:g} %): services and load generators starved")
    measured = bool(counters) or bool(missing) or cpu_pressure_pct is not None
    out: dict[str, Any] = {
        "measured": measured, "keeping_up": (not problems) if measured else None,
        "relayed_link_directions": len(counters), "unmeasured_links": unmeasured_links,
        "frames": frames, "late_frames": late, "late_fraction": round(late / frames, 6) if frames else 0.0,
        "max_late_ms": round(max((c.max_late_ms for c in counters), default=0.0), 3),
        "socket_drops": drops, "queue_drops": sum(c.queue_drops for c in counters),
        "send_errors": sum(c.send_errors for c in counters), "realtime_refused": realtime_refused,
        "cpu_pressure_pct": cpu_pressure_pct, "problems": problems,
    }
    return out


def merge(verdicts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One verdict for several networks of one run (an experiment may build more than one)."""
    vs = list(verdicts)
    if len(vs) == 1:
        return vs[0]
    measured = [v for v in vs if v.get("measured")]
    frames = sum(v["frames"] for v in vs)
    late = sum(v["late_frames"] for v in vs)
    return {
        "measured": bool(measured),
        "keeping_up": all(v["keeping_up"] for v in measured) if measured else None,
        "relayed_link_directions": sum(v["relayed_link_directions"] for v in vs),
        "unmeasured_links": sum(v["unmeasured_links"] for v in vs),
        "frames": frames, "late_frames": late, "late_fraction": round(late / frames, 6) if frames else 0.0,
        "max_late_ms": max((v["max_late_ms"] for v in vs), default=0.0),
        "socket_drops": sum(v["socket_drops"] for v in vs), "queue_drops": sum(v["queue_drops"] for v in vs),
        "send_errors": sum(v.get("send_errors", 0) for v in vs),
        "realtime_refused": sum(v.get("realtime_refused", 0) for v in vs),
        "cpu_pressure_pct": max((v["cpu_pressure_pct"] for v in vs if v.get("cpu_pressure_pct") is not None),
                                default=None),
        "problems": [f"network {i + 1}: {p}" for i, v in enumerate(vs) for p in v["problems"]],
        "networks": len(vs),
        **({"links_verified": merge_link_checks([v.get("links_verified") for v in vs])}
           if any(v.get("links_verified") for v in vs) else {}),
    }


def merge_link_checks(summaries: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """One ``links_verified`` for several networks (``None``: a network built without verification)."""
    got = [s for s in summaries if s]
    return {"classes": sum(s["classes"] for s in got), "ok": all(s["ok"] for s in got),
            "checks": [c for s in got for c in s["checks"]]}


def links_sentence(verdict: dict[str, Any] | None) -> str:
    """What a report says about the links' measurement (``--verify-links``): within spec, which link
    classes were off and by how much, or that they were not measured."""
    lv = (verdict or {}).get("links_verified")
    if not lv:
        return "Links were not verified by measurement (run with `--verify-links` to measure each link class)."
    if lv["ok"]:
        return (f"Links verified by measurement (`--verify-links`): {lv['classes']} link "
                f"class{'es' if lv['classes'] != 1 else ''}, each within its spec.")
    bad = [c for c in lv["checks"] if c.get("problems")]
    return ("> **Links unlike their spec** (measured with `--verify-links`): " + "; ".join(
        f"{c['link_class']} ({', '.join(c['links'])}): {', '.join(c['problems'])}" for c in bad) + ".")


def warning(verdict: dict[str, Any] | None) -> str | None:
    """The sentence a report opens with when the emulation did not keep up (None when it did)."""
    if not verdict or verdict.get("keeping_up") is not False:
        return None
    return ("**The emulation could not keep up**, so the figures below are not trustworthy: "
            + "; ".join(verdict["problems"]) + ". Run on a quieter or larger machine, a smaller topology, "
            "or the kernel's netem (`--links netem`).")


def cpu_pressure() -> tuple[float, int] | None:
    """(monotonic time, microseconds some task waited for a CPU) from ``/proc/pressure/cpu`` (Linux PSI),
    or None where the kernel has no PSI."""
    try:
        text = open("/proc/pressure/cpu").read()  # noqa: SIM115 - one small read
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some "):
            fields = dict(f.split("=", 1) for f in line.split()[1:])
            return time.monotonic(), int(fields["total"])
    return None


def pressure_pct(since: tuple[float, int] | None, now: tuple[float, int] | None) -> float | None:
    """Share of the wall time between two :func:`cpu_pressure` readings during which some runnable task
    waited for a CPU (the machine was CPU bound), in percent."""
    if since is None or now is None or now[0] <= since[0]:
        return None
    return round(100 * (now[1] - since[1]) / 1e6 / (now[0] - since[0]), 1)


# -- the emulation's own latency: a path's measured RTT against the one its links add up to -------------
RTT_ABS_MS = 1.0  # a path may take this much longer than its links' delays ...
RTT_REL = 0.02  # ... or this share of them, whichever is larger (issue #11's target for connect times)


def longest_path(topo: Any) -> tuple[str, str, list[str]] | None:
    """The pair of hosts whose route (shortest by delay, as the controller routes) crosses the most hops,
    with that route; None with fewer than two connected hosts. Every hop is a switch or link the
    emulation adds its own latency to, so this pair shows the worst of it."""
    import networkx as nx

    g = topo.graph()
    hosts = [h.name for h in topo.hosts]
    best: tuple[int, float, str, str, list[str]] | None = None
    for i, a in enumerate(hosts):
        dist, paths = nx.single_source_dijkstra(g, a, weight="delay_ms")
        for b in hosts[i + 1:]:
            if b in paths:
                cand = (len(paths[b]), dist[b], a, b, paths[b])
                if best is None or cand[:2] > best[:2]:
                    best = cand
    return None if best is None else (best[2], best[3], best[4])


def path_rtt_ms(topo: Any, path: list[str]) -> float:
    """The RTT a path's links add up to: each link's delay both ways (``delay_ms_ba`` when asymmetric)."""
    by_pair: dict[frozenset[str], Any] = {frozenset((ln.a, ln.b)): ln for ln in topo.links}
    for h in topo.hosts:
        by_pair[frozenset((h.name, h.switch))] = h.link
    total = 0.0
    for a, b in zip(path, path[1:], strict=False):
        p = by_pair[frozenset((a, b))]
        total += p.delay_ms + (p.delay_ms if p.delay_ms_ba is None else p.delay_ms_ba)
    return total


def rtt_problem(src: str, dst: str, hops: int, expected_ms: float, measured_ms: float | None) -> str | None:
    """The sentence when a path's best measured RTT exceeds its links' RTT by more than max(1 ms, 2 %)
    (pure); None when within."""
    if measured_ms is None:
        return f"no ping from {src} to {dst} was answered, so the emulation's own latency is unknown"
    excess = measured_ms - expected_ms
    bound = max(RTT_ABS_MS, RTT_REL * expected_ms)
    if excess > bound:
        return (f"the longest path ({src} to {dst}, {hops} hops) took {measured_ms:.1f} ms at best against "
                f"{expected_ms:.1f} ms of link delay: the emulation adds {excess:.1f} ms, more than "
                f"{bound:.1f} ms (max(1 ms, 2 %)); every RTT measured across several hops is inflated")
    return None


def probe_path_rtt(cn: Any, count: int = 10) -> dict[str, Any] | None:
    """Ping across the longest path of a built network ``count`` times (inside the source host) and compare
    the best RTT with what the path's links add up to."""
    found = longest_path(cn.topo)
    if found is None:
        return None
    src, dst, path = found
    rtts = sorted(ping.rtts(cn.host(src), cn.ip(dst), count))
    expected = path_rtt_ms(cn.topo, path)
    best = rtts[0] if rtts else None
    hops = len(path) - 1
    return {"src": src, "dst": dst, "hops": hops, "expected_ms": round(expected, 3),
            "best_ms": best, "median_ms": rtts[len(rtts) // 2] if rtts else None,
            "excess_ms": None if best is None else round(best - expected, 3),
            "problem": rtt_problem(src, dst, hops, expected, best)}


def collect(cn: Any, timeout: float = 10.0, since: tuple[float, int] | None = None) -> dict[str, Any]:
    """Ask the relay processes of a built network for every relayed link's counters (one request per
    process), and :func:`assess` them. ``since`` is a :func:`cpu_pressure` reading from when the network was
    built (adds ``cpu_pressure_pct``)."""
    from testbed.net.links import RelayLink, relay_counters  # Mininet is imported only where a network exists

    links = list(getattr(cn.net, "links", []))
    relays = [ln for ln in links if isinstance(ln, RelayLink)]
    unmeasured = sum(1 for ln in links if not isinstance(ln, RelayLink) and getattr(ln, "shape", None))
    got = relay_counters(relays, timeout)
    counters: list[LinkCounters] = []
    missing: list[str] = []
    for ln in relays:
        name = f"{ln.intf1.node.name}-{ln.intf2.node.name}" if ln.intf1 and ln.intf2 else f"relay {ln.number}"
        c = got.get(ln)
        if c is None:
            missing.append(name)
            continue
        counters += [LinkCounters.from_relay(name, d, c) for d in ("a_to_b", "b_to_a")]
    procs = {ln.relay for ln in relays if ln.relay is not None}
    v = assess(counters, unmeasured_links=unmeasured, missing=missing,
               cpu_pressure_pct=pressure_pct(since, cpu_pressure()),
               realtime_refused=sum(1 for p in procs if p.realtime is False))
    rtt = probe_path_rtt(cn) if getattr(cn, "topo", None) is not None else None
    if rtt is not None:
        v["path_rtt"] = rtt
        if rtt["problem"]:
            v["problems"].append(rtt["problem"])
            v["keeping_up"] = False
            v["measured"] = True
    v["worst_links"] = [asdict(c) for c in sorted(counters, key=lambda c: (c.socket_drops, c.late_frames),
                                                  reverse=True)[:5] if c.socket_drops or c.late_frames]
    from testbed.net.links import NetemLink

    netem = [ln for ln in links if isinstance(ln, NetemLink)]
    if netem:  # the kernel's own counters of the netem links (no relay to ask)
        v["netem"] = netem_totals([intf.node.cmd(f"tc -s qdisc show dev {intf.name}")
                                   for ln in netem for intf in (ln.intf1, ln.intf2)])
    return v


_QDISC_STATS = re.compile(r"^qdisc (\w+) [^\n]*\n\s*Sent \d+ bytes (\d+) pkt \(dropped (\d+)", re.MULTILINE)


def netem_totals(tc_outputs: Sequence[str]) -> dict[str, int]:
    """Totals over ``tc -s qdisc show`` of every netem link end: ``directions``, ``frames`` (sent on by
    netem), ``dropped`` (by netem: random loss, and frames its rate limiter's queue refused) and
    ``queue_drops`` (the ``pfifo`` bottleneck queue, the spec's own tail drop)."""
    out = {"directions": 0, "frames": 0, "dropped": 0, "queue_drops": 0}
    for text in tc_outputs:
        for kind, pkts, dropped in _QDISC_STATS.findall(text):
            if kind == "netem":
                out["directions"] += 1
                out["frames"] += int(pkts)
                out["dropped"] += int(dropped)
            elif kind == "pfifo":
                out["queue_drops"] += int(dropped)
    return out
