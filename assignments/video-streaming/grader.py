"""Grader of lab video-streaming: the student's ABR policy, in a trace-driven player and through the CDN.

Direct stage: a session simulator (the player's buffer model: a segment is requested when there is room,
downloads at the trace's bandwidth, playback drains the buffer, an empty buffer stalls) runs the student's
``Abr`` and the reference policies on the same traces and compares the linear QoE of Yin et al. (SIGCOMM
2015, ``testbed/measure/qoe.py``). Network stage: the real player (``testbed.measure.player``) streams the
testbed's DASH title through the anycast VIP of ``mini`` from a client whose access link follows a
bandwidth trace; the student's policy runs in a sandbox inside the player (``--submission``).
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from testbed.grade import Check, Fail
from testbed.measure.abr import AbrContext, Bba, Throughput, check_choice
from testbed.measure.qoe import SegmentRecord, summarize
from testbed.net.traces import Trace, load_trace

TITLE = "Video streaming: an adaptive-bitrate policy judged by QoE, simulated and through the CDN"
MODULE = "abr_policy"
CLASS = "Abr"
#: the testbed's own ABR policies: a submission may not re-export them (contract.import_guard)
REFERENCE = tuple(f"testbed.measure.abr:{n}" for n in ("Throughput", "Bba", "Bola", "Mpc", "POLICIES"))
PRELOAD = ("testbed.measure.abr",)
SLIDE = "Yin et al., SIGCOMM 2015 (linear QoE); Huang et al., SIGCOMM 2014 (BBA); lecture: CDNs carry video"

LADDER = (300, 750, 1200, 2400, 4000, 6000)
SEGMENT_S = 2.0
MAX_BUFFER_S = 30.0
RTT_S = 0.04


def _new(mod: ModuleType) -> Any:
    cls = getattr(mod, CLASS, None)
    if not isinstance(cls, type):
        raise Fail(f"your module has no class {CLASS}")
    if not callable(getattr(cls, "choose", None)):
        raise Fail(f"{CLASS} has no choose(ctx) method")
    return cls()


class _Bandwidth:
    """A looping trace: Mbit/s at time t, and how long that step lasts from t."""

    def __init__(self, trace: Trace) -> None:
        self.steps = trace.steps
        self.period = trace.period_s

    def at(self, t: float) -> tuple[float, float]:
        x = t % self.period
        for d, mbit in self.steps:
            if x < d:
                return mbit, d - x
            x -= d
        return self.steps[-1][1], 1e-9

    def download_s(self, bits: float, t: float) -> float:
        dt, left = RTT_S, bits
        while left > 1e-9:
            mbit, rest = self.at(t + dt)
            cap = mbit * 1e6 * rest
            if cap >= left:
                return dt + left / (mbit * 1e6)
            left -= cap
            dt += rest
        return dt


def simulate(choose: Callable[[AbrContext], Any], trace: Trace, segments: int = 60) -> dict[str, Any]:
    """One session of ``segments`` segments over ``trace``: the player's summary (qoe, rebuffer_s, ...)."""
    bw = _Bandwidth(trace)
    t = buffer = 0.0
    playing, startup = False, None
    last: int | None = None
    thr: list[float] = []
    records: list[SegmentRecord] = []
    for n in range(1, segments + 1):
        room = buffer + SEGMENT_S - MAX_BUFFER_S
        if room > 0:  # wait for room: playback drains the buffer meanwhile
            t += room
            buffer -= room
        ctx = AbrContext(LADDER, SEGMENT_S, buffer, MAX_BUFFER_S, last, tuple(thr), n, segments - n + 1)
        i = int(choose(ctx))
        bits = LADDER[i] * 1000 * SEGMENT_S
        dt = bw.download_s(bits, t)
        stall = 0.0
        if playing:
            stall = max(0.0, dt - buffer)
            buffer = max(0.0, buffer - dt)
        t += dt
        buffer += SEGMENT_S
        if not playing and buffer >= SEGMENT_S:
            playing, startup = True, t
        thr.append(bits / dt / 1000)
        records.append(
            SegmentRecord(
                n,
                str(i),
                LADDER[i],
                int(bits / 8),
                t - dt,
                t - dt + RTT_S,
                t,
                dt * 1000,
                thr[-1],
                buffer,
                stall,
            )
        )
        last = i
    return summarize(records, startup, segments * SEGMENT_S)


def _session(policy: Any, trace: Trace, segments: int = 60) -> dict[str, Any]:
    def choose(ctx: AbrContext) -> int:
        return check_choice(policy, ctx, policy.choose(ctx))

    return simulate(choose, trace, segments)


def _trace(name: str, steps: list[tuple[float, float]]) -> Trace:
    return Trace(name, tuple(steps))


def _random_walk(seed: int, lo: float, hi: float, n: int = 60) -> Trace:
    rng = random.Random(seed)
    x, steps = (lo + hi) / 2, []
    for _ in range(n):
        x = min(hi, max(lo, x * math.exp(rng.gauss(0, 0.35))))
        if rng.random() < 0.04:
            steps.append((3.0, lo / 3))  # a tunnel
        steps.append((1.0, round(x, 2)))
    return _trace(f"hidden-walk-{seed}", steps)


def _compare(mod: ModuleType, traces: list[Trace]) -> str:
    lines = []
    for tr in traces:
        mine = _session(_new(mod), tr)
        refs = {"throughput": _session(Throughput(), tr), "bba": _session(Bba(), tr)}
        bar = min(r["qoe"] for r in refs.values())
        line = (
            f"{tr.name}: QoE yours {mine['qoe']:.0f} (rebuffer {mine['rebuffer_s']:.1f} s, "
            f"{mine['avg_bitrate_kbps']:.0f} kbit/s), throughput {refs['throughput']['qoe']:.0f}, "
            f"bba {refs['bba']['qoe']:.0f}"
        )
        if mine["qoe"] < bar:
            raise Fail(f"QoE below both classic policies: {line}")
        lines.append(line)
    return "; ".join(lines)


def check_interface(mod: ModuleType) -> str:
    p = _new(mod)
    cases = [
        AbrContext(LADDER, SEGMENT_S, 0.0, MAX_BUFFER_S, None),
        AbrContext(LADDER, SEGMENT_S, 10.0, MAX_BUFFER_S, 2, (3000.0, 3500.0), 6, 54),
        AbrContext(LADDER, SEGMENT_S, 29.0, MAX_BUFFER_S, 5, (90000.0,) * 8, 30, 30),
        AbrContext((500,), SEGMENT_S, 4.0, MAX_BUFFER_S, 0, (100.0,), 3, None, live=True),
    ]
    for ctx in cases:
        try:
            check_choice(p, ctx, p.choose(ctx))
        except ValueError as e:
            raise Fail(
                f"{e} (context: buffer {ctx.buffer_s} s, last {ctx.last}, ladder {ctx.bitrates_kbps})"
            ) from None
    return "valid ladder indices for first, middle, full-buffer and single-rung live contexts"


def check_ample(mod: ModuleType) -> str:
    s = _session(_new(mod), _trace("50 Mbit/s", [(60.0, 50.0)]))
    if s["rebuffer_s"] > 0 or s["avg_bitrate_kbps"] < 0.75 * LADDER[-1]:
        raise Fail(
            f"at 50 Mbit/s for 60 segments: expected no rebuffering and an average of at least "
            f"{0.75 * LADDER[-1]:.0f} kbit/s, got rebuffer {s['rebuffer_s']} s, average {s['avg_bitrate_kbps']} kbit/s"
        )
    return f"50 Mbit/s: average {s['avg_bitrate_kbps']} kbit/s, no rebuffering"


def check_scarce(mod: ModuleType) -> str:
    s = _session(_new(mod), _trace("0.6 Mbit/s", [(60.0, 0.6)]))
    if s["rebuffer_s"] > 1.0:
        raise Fail(
            f"at 0.6 Mbit/s (only the 300 kbit/s rung fits) for 60 segments: expected at most 1 s of "
            f"rebuffering, got {s['rebuffer_s']} s at an average of {s['avg_bitrate_kbps']} kbit/s"
        )
    return f"0.6 Mbit/s: rebuffer {s['rebuffer_s']} s"


def check_shipped_traces(mod: ModuleType) -> str:
    return _compare(mod, [load_trace(n) for n in ("step-down", "3g-bus", "4g-drive")])


def check_hidden_traces(mod: ModuleType) -> str:
    return _compare(mod, [_random_walk(7, 0.4, 4.0), _random_walk(11, 1.0, 12.0), _random_walk(23, 0.2, 2.0)])


# ---------------------------------------------------------------------------------------------------------
# network stage: the real player in a client of mini, its access link on a trace

NETWORK_TRACE = "duration_s,mbit\n6,6\n6,1.2\n6,3\n"
#: not in the handout: a deeper dip and a slow recovery, played while the serving edge dies
HIDDEN_TRACE = "duration_s,mbit\n4,5\n5,0.8\n4,2\n5,4.5\n"
DURATION_S = 24
#: the hidden check kills e1 this long into the first segment download the player starts after the kill
#: time: every policy loses the same 0.5 s of download (a kill at a wall time would land anywhere in a
#: segment, costing from nothing to a whole segment's download time, so one submission could pass or fail
#: by chance: the reference itself lost up to 4.2 s that way)
KILL_INTO_SEGMENT_S = 0.5


def _play(cn: Any, client: str, policy: str, out: Path, submission: Path | None) -> dict[str, Any]:
    vip = cn.topo.anycast[0].vip
    log = out.with_suffix(".csv")
    cmd = [sys.executable, "-m", "testbed.measure.player", "/dash/testcard/manifest.mpd", "--via", "anycast",
           "--vip", vip, "--policy", policy, "--duration", str(DURATION_S), "--summary", str(out),
           "--csv", str(log), "--give-up", "20", *(["--submission", str(submission)] if submission else [])]
    # an argument list, no shell: Mininet's popen(shell=True) reads $SHELL, which an autograder's
    # container, a cron job or the test VM need not set
    return {"popen": cn.host(client).popen(cmd), "out": out, "log": log}


def _segments_in(p: dict[str, Any]) -> int:
    """Segments the player has logged so far (its CSV is written and flushed as each one comes in)."""
    try:
        return max(0, len(p["log"].read_text().splitlines()) - 1)
    except OSError:
        return 0


def _kill_into_a_segment(p: dict[str, Any], kill: Any, timeout: float) -> None:
    """Call ``kill()`` :data:`KILL_INTO_SEGMENT_S` after the player's next segment comes in (when it asks
    for the one after); at ``timeout`` or when the player has ended, at once."""
    import time

    seen, deadline = _segments_in(p), time.monotonic() + timeout
    while time.monotonic() < deadline and p["popen"].poll() is None and _segments_in(p) == seen:
        time.sleep(0.01)
    if p["popen"].poll() is None and time.monotonic() < deadline:
        time.sleep(KILL_INTO_SEGMENT_S)
    kill()


def _finish(p: dict[str, Any], who: str) -> dict[str, Any]:
    proc = p["popen"]
    try:
        _, err = proc.communicate(timeout=DURATION_S * 4 + 60)
    except Exception:  # noqa: BLE001 - a player that hangs is a failed session
        proc.kill()
        raise Fail(f"the player with {who} did not finish") from None
    if not p["out"].exists():
        lines = [ln for ln in (err or b"").decode(errors="replace").splitlines() if ln.strip()]
        raise Fail(f"the player with {who} failed: {lines[-1] if lines else 'no output'}")
    return json.loads(p["out"].read_text())


def _video_network(
    mod: ModuleType, label: str, kill_after: float | None, slack_s: float, trace: str = NETWORK_TRACE
) -> str:
    import os
    import tempfile
    import time

    from testbed.grade_network import lab_network, submission_of
    from testbed.net.launch import CdnOptions
    from testbed.net.spec import load_topology

    sub = submission_of(mod, REFERENCE, preload=PRELOAD)
    fd, name = tempfile.mkstemp(prefix="cdnlab-grade-trace-", suffix=".csv")
    os.close(fd)
    trace_file = Path(name)
    try:
        trace_file.write_text(trace)
        topo = load_topology("mini")
        for c in ("c1", "c2"):  # the same trace on both clients' access links
            h = topo.host(c)
            h.link = h.link.model_copy(update={"trace": str(trace_file), "bw_mbit": 6.0})
        with lab_network(topo, CdnOptions(roles=("origin", "edge"))) as (cn, svc):
            run = Path(cn.run_dir)
            sub_file = run / "submission.json"
            sub_file.write_text(sub.model_dump_json())
            mine = _play(cn, "c1", f"{mod.__name__}:{CLASS}", run / "mine.json", sub_file)
            ref = _play(cn, "c2", "throughput", run / "ref.json", None)
            if kill_after is not None:
                time.sleep(kill_after)
                _kill_into_a_segment(mine, lambda: svc.fail("e1"), timeout=DURATION_S)
            a, b = _finish(mine, "your policy"), _finish(ref, "the throughput rule")
            if kill_after is not None:
                svc.recover("e1")
    finally:
        trace_file.unlink(missing_ok=True)
    line = (
        f"{label}: yours QoE {a['qoe']:.0f}, rebuffer {a['rebuffer_s']:.2f} s, {a['avg_bitrate_kbps']:.0f} kbit/s; "
        f"throughput rule QoE {b['qoe']:.0f}, rebuffer {b['rebuffer_s']:.2f} s, {b['avg_bitrate_kbps']:.0f} kbit/s"
    )
    if a.get("error"):
        raise Fail(f"your session failed ({a['error']}): {line}")
    if a["segments"] < DURATION_S / SEGMENT_S:
        raise Fail(f"your session played {a['segments']} segments of {DURATION_S / SEGMENT_S:.0f}: {line}")
    if a["rebuffer_s"] > b["rebuffer_s"] + slack_s or a["avg_bitrate_kbps"] < 0.6 * b["avg_bitrate_kbps"]:
        raise Fail(
            f"more than {slack_s:g} s more rebuffering, or under 60 % of the bitrate, than the throughput rule: {line}"
        )
    return line


def check_network_visible(mod: ModuleType) -> str:
    return _video_network(mod, "mini, access links 6 / 1.2 / 3 Mbit/s", None, 2.0)


def check_network_hidden(mod: ModuleType) -> str:
    return _video_network(mod, "hidden trace, and e1 killed 0.5 s into a download 8 s in", 8.0, 4.0, HIDDEN_TRACE)


def checks() -> list[Check]:
    return [
        Check(
            "interface: Abr().choose(ctx) -> ladder index",
            check_interface,
            "testbed/measure/abr.py AbrContext",
        ),
        Check("ample bandwidth: the top rung, no rebuffering", check_ample, SLIDE),
        Check("scarce bandwidth: no rebuffering", check_scarce, f"{SLIDE}; a stall costs 3000 per second"),
        Check(
            "shipped traces: QoE at least the throughput rule's or BBA-0's",
            check_shipped_traces,
            "topologies/traces/*.csv; compare with cdnlab run video",
            timeout=20,
        ),
        Check(
            "hidden traces: QoE at least the throughput rule's or BBA-0's",
            check_hidden_traces,
            "random walks with tunnels that are not in the handout",
            timeout=20,
            visibility="after_due_date",
        ),
        Check(
            "network (mini): the real player through the anycast VIP on a trace",
            check_network_visible,
            "your policy runs in the player inside c1; the throughput rule plays in c2 at the same time",
            timeout=600,
            points=2,
            stage="network",
        ),
        Check(
            "network (hidden workload): the serving edge killed mid-session",
            check_network_hidden,
            "anycast moves the player to e2; your policy sees a slow segment and an emptier buffer",
            timeout=600,
            points=2,
            visibility="after_due_date",
            stage="network",
        ),
    ]
