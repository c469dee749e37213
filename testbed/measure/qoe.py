"""A streaming session's quality of experience, from the player's per-segment log.

The score is the linear QoE of Yin et al. ("A Control-Theoretic Approach for Dynamic Adaptive Video
Streaming over HTTP", SIGCOMM 2015, eq. 5 with q(R) = R): the sum of the segments' bitrates in kbit/s,
minus ``switch_weight`` times the sum of the bitrate changes between consecutive segments, minus
``rebuf_weight`` times the seconds of rebuffering, minus ``startup_weight`` times the startup delay;
with the paper's "balanced" weights 1, 3000 and 3000 (a second of stall costs as much as 3 Mbit/s of
bitrate for one segment).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class SegmentRecord:
    """One segment as the player fetched it. Times in seconds since the session started (monotonic),
    except ``wall`` (``t_request`` on the wall clock)."""

    number: int
    representation: str
    bitrate_kbps: int
    bytes: int
    t_request: float  # the request's headers were written to the socket (after any wait for room)
    t_first_byte: float
    t_done: float  # the last byte arrived
    download_ms: float  # t_done - t_request, in ms
    throughput_kbps: float
    buffer_s: float  # buffer level just after this segment was added
    stall_s: float = 0.0  # the stall that this segment ended (0: none)
    stall_start: float | None = None
    attempts: int = 1  # requests it took (failures retried through the selection method)
    server: str = ""  # the edge that served it (X-Served-By) and its address
    server_ip: str = ""
    x_cache: str = ""
    error: str = ""  # the last failed attempt's error, when attempts > 1
    wall: float = 0.0  # t_request as POSIX time (the session's start on the wall clock + t_request)

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def row(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class QoeWeights:
    switch_weight: float = 1.0
    rebuf_weight: float = 3000.0
    startup_weight: float = 3000.0


def summarize(
    records: list[SegmentRecord], startup_s: float | None, played_s: float, weights: QoeWeights | None = None
) -> dict[str, float | int | None]:
    """The session's metrics: startup delay, rebuffering (ratio, count, seconds), average bitrate,
    switches, and the linear QoE (total and per segment). ``played_s`` is the video time played."""
    w = weights or QoeWeights()
    rates = [r.bitrate_kbps for r in records]
    stalls = [r.stall_s for r in records if r.stall_s > 0]
    rebuf = sum(stalls)
    switches = sum(1 for a, b in zip(rates, rates[1:], strict=False) if a != b)
    switch_kbps = sum(abs(a - b) for a, b in zip(rates, rates[1:], strict=False))
    start = startup_s if startup_s is not None else 0.0
    qoe = sum(rates) - w.switch_weight * switch_kbps - w.rebuf_weight * rebuf - w.startup_weight * start
    return {
        "segments": len(records),
        "startup_s": None if startup_s is None else round(startup_s, 4),
        "rebuffer_s": round(rebuf, 4),
        "rebuffer_count": len(stalls),
        "rebuffer_ratio": round(rebuf / (played_s + rebuf), 5) if played_s + rebuf > 0 else 0.0,
        "avg_bitrate_kbps": round(sum(rates) / len(rates), 1) if rates else 0.0,
        "switches": switches,
        "qoe": round(qoe, 1),
        "qoe_per_segment": round(qoe / len(records), 2) if records else 0.0,
        "retries": sum(r.attempts - 1 for r in records),
    }
