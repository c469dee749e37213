"""Failover gap analysis of prober samples (and of a packet capture, with Scapy).

The failover prober is :mod:`testbed.measure.driver` with a ``probes`` schedule: one fetch every
``interval_ms``, one JSON line per probe with ``t`` (wall-clock start, s), ``seq``, ``served_by`` (the
``X-Served-By`` of the answering edge) and ``error`` (empty on success). This module turns those lines into
what a failover experiment reports, with pure functions:

* :func:`outages`: maximal runs of failed probes, each with its first failure, the first success after it
  and the gap between the last success before and the first success after (the client-visible outage);
* :func:`first_success_after` / :func:`recovery`: how long after a given failure time (when the
  experiment killed an edge or cut a link) the first probe succeeded, and how many failed in between;
* :func:`segments`: which edge answered when (consecutive successes by one edge), and the switchovers.

:func:`response_times_from_pcap` reads a capture with Scapy (``rdpcap``) and returns the times of HTTP
responses leaving a server port, so :func:`wire_gaps` can show the same outage on the wire.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Probe:
    t: float
    seq: int
    served_by: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class Outage:
    """A maximal run of failed probes."""

    start: float  # t of the first failed probe
    end: float | None  # t of the first successful probe after it (None: never recovered)
    failed: int  # probes that failed in the run
    first_seq: int
    last_seq: int
    last_ok_before: float | None  # t of the last success before the run
    edge_before: str
    edge_after: str

    @property
    def duration_s(self) -> float | None:
        """First failure to first success after (None when it never recovered)."""
        return None if self.end is None else self.end - self.start

    @property
    def gap_s(self) -> float | None:
        """Last success before to first success after: how long no answer reached the client."""
        if self.end is None or self.last_ok_before is None:
            return None
        return self.end - self.last_ok_before

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duration_s": self.duration_s, "gap_s": self.gap_s}


@dataclass(frozen=True)
class Segment:
    """Consecutive successful probes answered by one edge."""

    edge: str
    start: float
    end: float
    probes: int
    first_seq: int
    last_seq: int


def to_probe(row: Mapping[str, Any]) -> Probe:
    """A driver sample (dict) -> :class:`Probe`; ``status`` >= 500 or 0 without ``error`` counts as failed."""
    err = str(row.get("error") or "")
    status = row.get("status")
    if not err and status is not None and status != "" and (int(status) >= 500 or int(status) == 0):
        err = f"http {status}"
    return Probe(
        float(row["t"]),
        int(row.get("seq") if row.get("seq") not in (None, "") else -1),
        str(row.get("served_by") or ""),
        err,
    )


def load_samples(path: str | Path) -> tuple[list[Probe], int]:
    """Read a driver's JSON-lines file: (probes with a ``seq``, sorted; number of unreadable lines)."""
    probes, bad = [], 0
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if row.get("seq") is None:
                continue  # a scheduled fetch, not a probe
            probes.append(to_probe(row))
        except (ValueError, KeyError, TypeError):
            bad += 1
    return ordered(probes), bad


def ordered(samples: Iterable[Probe | Mapping[str, Any]]) -> list[Probe]:
    """Probes sorted by sequence number (then time); dicts are converted."""
    ps = [s if isinstance(s, Probe) else to_probe(s) for s in samples]
    return sorted(ps, key=lambda p: (p.seq, p.t))


def outages(samples: Iterable[Probe | Mapping[str, Any]], min_failed: int = 1) -> list[Outage]:
    """Runs of at least ``min_failed`` consecutive failed probes, in order."""
    ps = ordered(samples)
    out: list[Outage] = []
    last_ok: Probe | None = None
    run: list[Probe] = []
    for p in [*ps, None]:
        if p is not None and not p.ok:
            run.append(p)
            continue
        if run and len(run) >= min_failed:
            out.append(
                Outage(
                    run[0].t,
                    p.t if p is not None else None,
                    len(run),
                    run[0].seq,
                    run[-1].seq,
                    last_ok.t if last_ok else None,
                    last_ok.served_by if last_ok else "",
                    p.served_by if p is not None else "",
                )
            )
        run = []
        if p is not None:
            last_ok = p
    return out


def first_success_after(samples: Iterable[Probe | Mapping[str, Any]], t_fail: float) -> Probe | None:
    """The first successful probe sent at or after ``t_fail`` (None: none succeeded)."""
    return next((p for p in ordered(samples) if p.t >= t_fail and p.ok), None)


def failed_count(
    samples: Iterable[Probe | Mapping[str, Any]], since: float | None = None, until: float | None = None
) -> int:
    """Failed probes sent in [since, until)."""
    return sum(
        1
        for p in ordered(samples)
        if not p.ok and (since is None or p.t >= since) and (until is None or p.t < until)
    )


def segments(samples: Iterable[Probe | Mapping[str, Any]]) -> list[Segment]:
    """Which edge answered when: runs of successes by the same edge (failures do not split a run)."""
    out: list[Segment] = []
    cur: list[Probe] = []
    for p in ordered(samples):
        if not p.ok:
            continue
        if cur and p.served_by != cur[0].served_by:
            out.append(Segment(cur[0].served_by, cur[0].t, cur[-1].t, len(cur), cur[0].seq, cur[-1].seq))
            cur = []
        cur.append(p)
    if cur:
        out.append(Segment(cur[0].served_by, cur[0].t, cur[-1].t, len(cur), cur[0].seq, cur[-1].seq))
    return out


def switchovers(segs: Sequence[Segment]) -> list[tuple[float, str, str]]:
    """(time of the first probe on the new edge, old edge, new edge) for every change of edge."""
    return [(b.start, a.edge, b.edge) for a, b in zip(segs, segs[1:], strict=False)]


def recovery(samples: Iterable[Probe | Mapping[str, Any]], t_fail: float) -> dict[str, Any]:
    """After a failure injected at ``t_fail``: failed probes, first success, recovery time, edges."""
    ps = ordered(samples)
    first = first_success_after(ps, t_fail)
    before = [p for p in ps if p.t < t_fail and p.ok]
    return {
        "t_fail": t_fail,
        "failed_after": failed_count(ps, since=t_fail, until=first.t if first else None),
        "first_success_t": first.t if first else None,
        "first_success_seq": first.seq if first else None,
        "recovery_s": (first.t - t_fail) if first else None,
        "edge_before": before[-1].served_by if before else "",
        "edge_after": first.served_by if first else "",
    }


def analyze(samples: Iterable[Probe | Mapping[str, Any]], t_fail: float | None = None) -> dict[str, Any]:
    """Everything above in one JSON-able dict."""
    ps = ordered(samples)
    outs = outages(ps)
    segs = segments(ps)
    res: dict[str, Any] = {
        "probes": len(ps),
        "failed": sum(1 for p in ps if not p.ok),
        "outages": [o.as_dict() for o in outs],
        "longest_outage_s": max((o.duration_s for o in outs if o.duration_s is not None), default=0.0),
        "longest_gap_s": max((o.gap_s for o in outs if o.gap_s is not None), default=0.0),
        "segments": [asdict(s) for s in segs],
        "switchovers": [{"t": t, "from": a, "to": b} for t, a, b in switchovers(segs)],
    }
    if t_fail is not None:
        res["recovery"] = recovery(ps, t_fail)
    return res


# ---- on the wire ---------------------------------------------------------------------------------------


def response_times_from_pcap(path: str | Path, server_port: int = 80) -> list[float]:
    """Capture times of TCP segments with payload sent *from* ``server_port`` (HTTP responses), read with
    Scapy's ``rdpcap``; sorted."""
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    times = []
    for pkt in rdpcap(str(path)):
        if TCP in pkt and pkt[TCP].sport == server_port and len(bytes(pkt[TCP].payload)) > 0:
            times.append(float(pkt.time))
    return sorted(times)


def wire_gaps(times: Sequence[float], threshold_s: float) -> list[tuple[float, float]]:
    """(start, end) of every silence longer than ``threshold_s`` between consecutive event times."""
    ts = sorted(times)
    return [(a, b) for a, b in zip(ts, ts[1:], strict=False) if b - a > threshold_s]
