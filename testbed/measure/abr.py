"""Adaptive-bitrate policies: which representation to fetch next, from what the player has seen.

A policy is a small class with a ``name`` and ``choose(ctx) -> index`` into the ladder (ascending);
the player (:mod:`testbed.measure.player`) calls it once per segment with an :class:`AbrContext`. Four
are built in, picked by name; ``module:Class`` loads any other (a student's, in the video lab):

* ``throughput`` - rate-based: the highest bitrate below ``safety`` times the harmonic mean of the last
  five segments' throughput (as dash.js's ThroughputRule and FESTIVE's estimator);
* ``bba`` - buffer-based BBA-0 (Huang et al., "A Buffer-Based Approach to Rate Adaptation", SIGCOMM
  2014): a linear map from buffer level to bitrate between a reservoir and a cushion, with the paper's
  hysteresis (stay unless the map crosses the next rate up or down);
* ``bola`` - BOLA-BASIC (Spiteri, Urgaonkar, Sitaraman, "BOLA: Near-Optimal Bitrate Adaptation for Online
  Videos", INFOCOM 2016), Lyapunov utility maximisation on the buffer, parameters as dash.js sets them;
* ``mpc`` - RobustMPC (Yin et al., "A Control-Theoretic Approach for Dynamic Adaptive Video Streaming
  over HTTP", SIGCOMM 2015), the hybrid: it predicts throughput (harmonic mean discounted by the last
  five prediction errors) and picks the first step of the bitrate plan over the next five segments that
  maximises the linear QoE of :mod:`testbed.measure.qoe` given the buffer.
"""

from __future__ import annotations

import importlib
import itertools
from dataclasses import dataclass, field
from typing import ClassVar, Protocol


@dataclass(frozen=True)
class AbrContext:
    """What a policy knows before choosing the next segment."""

    bitrates_kbps: tuple[int, ...]  # the ladder, ascending
    segment_s: float
    buffer_s: float  # seconds of video buffered now
    max_buffer_s: float
    last: int | None  # index of the previous segment's representation (None before the first)
    throughput_kbps: tuple[float, ...] = ()  # measured per segment, oldest first
    segment: int = 1  # the number of the segment to fetch
    segments_left: int | None = None  # including this one; None: live without end
    live: bool = False


class AbrPolicy(Protocol):
    name: ClassVar[str]

    def choose(self, ctx: AbrContext) -> int: ...


def harmonic_mean(xs: tuple[float, ...] | list[float]) -> float:
    xs = [x for x in xs if x > 0]
    return len(xs) / sum(1.0 / x for x in xs) if xs else 0.0


def highest_below(ladder: tuple[int, ...], kbps: float) -> int:
    """Index of the highest bitrate at most ``kbps`` (0 when even the lowest is above it)."""
    best = 0
    for i, b in enumerate(ladder):
        if b <= kbps:
            best = i
    return best


@dataclass
class Throughput:
    """Rate-based: the highest bitrate under ``safety`` x harmonic mean of the last ``window`` segments."""

    name: ClassVar[str] = "throughput"
    safety: float = 0.9
    window: int = 5

    def choose(self, ctx: AbrContext) -> int:
        if not ctx.throughput_kbps:
            return 0
        est = harmonic_mean(list(ctx.throughput_kbps[-self.window :]))
        return highest_below(ctx.bitrates_kbps, self.safety * est)


@dataclass
class Bba:
    """BBA-0 (Huang et al. 2014, §4): rate map f(B) linear from R_min at the reservoir to R_max at
    reservoir + cushion. The paper's 90 s / 126 s of a 240 s buffer are scaled to the player's buffer:
    reservoir ``reservoir_frac`` and cushion ``cushion_frac`` of ``max_buffer_s`` (at least two segments)."""

    name: ClassVar[str] = "bba"
    reservoir_frac: float = 0.2
    cushion_frac: float = 0.6

    def choose(self, ctx: AbrContext) -> int:
        lad = ctx.bitrates_kbps
        r = max(2 * ctx.segment_s, self.reservoir_frac * ctx.max_buffer_s)
        cu = max(2 * ctx.segment_s, self.cushion_frac * ctx.max_buffer_s)
        b = ctx.buffer_s
        if b <= r:
            return 0
        if b >= r + cu:
            return len(lad) - 1
        f = lad[0] + (lad[-1] - lad[0]) * (b - r) / cu
        prev = ctx.last if ctx.last is not None else 0
        up = lad[min(prev + 1, len(lad) - 1)]
        down = lad[max(prev - 1, 0)]
        if f >= up:
            return max(i for i, x in enumerate(lad) if x < f) if any(x < f for x in lad) else 0
        if f <= down:
            return min(i for i, x in enumerate(lad) if x > f)
        return prev


@dataclass
class Bola:
    """BOLA-BASIC (Spiteri et al. 2016, Algorithm 1) with dash.js's parameters: utilities
    ln(S_m / S_1) + 1, gp and V chosen so the lowest rung is picked below ``min_buffer_s`` and the
    highest near the buffer target. Until one segment is buffered it starts at the lowest rung."""

    name: ClassVar[str] = "bola"
    min_buffer_s: float = 10.0
    per_level_s: float = 2.0

    def choose(self, ctx: AbrContext) -> int:
        import math

        lad = ctx.bitrates_kbps
        if len(lad) == 1:
            return 0
        util = [math.log(b / lad[0]) + 1.0 for b in lad]
        target = max(ctx.max_buffer_s - ctx.segment_s, self.min_buffer_s + self.per_level_s * len(lad))
        gp = (util[-1] - 1.0) / (target / self.min_buffer_s - 1.0)
        vp = self.min_buffer_s / gp
        q = ctx.buffer_s
        scores = [(vp * (u + gp) - q) / b for u, b in zip(util, lad, strict=True)]
        return max(range(len(lad)), key=lambda i: (scores[i], -i))


@dataclass
class Mpc:
    """RobustMPC (Yin et al. 2015, §4-5): horizon ``horizon`` segments, throughput predicted as the
    harmonic mean of the last five divided by (1 + the largest of the last five relative errors), the
    plan scored by the linear QoE (bitrate, switch penalty ``switch_weight``, rebuffering
    ``rebuf_weight`` kbit/s per second) and its first step taken."""

    name: ClassVar[str] = "mpc"
    horizon: int = 5
    switch_weight: float = 1.0
    rebuf_weight: float = 3000.0
    #: the throughput predicted for the segment at each position of ``throughput_kbps``
    _predicted: dict[int, float] = field(default_factory=dict, repr=False)

    def choose(self, ctx: AbrContext) -> int:
        lad = ctx.bitrates_kbps
        tp = ctx.throughput_kbps
        k = len(tp)
        if not tp:
            return 0
        errors = [
            abs(self._predicted[j] - tp[j]) / tp[j]
            for j in range(max(0, k - 5), k)
            if j in self._predicted and tp[j] > 0
        ]
        hm = harmonic_mean(list(tp[-5:]))
        if hm <= 0:
            return 0
        pred = hm / (1.0 + (max(errors) if errors else 0.0))
        self._predicted[k] = hm  # the error is the harmonic-mean predictor's (as the paper's RobustMPC)
        self._predicted.pop(k - 6, None)
        steps = self.horizon if ctx.segments_left is None else max(1, min(self.horizon, ctx.segments_left))
        last = lad[ctx.last if ctx.last is not None else 0]
        d = ctx.segment_s
        best, best_q = 0, float("-inf")
        for plan in itertools.product(range(len(lad)), repeat=steps):
            buf, q, prev = ctx.buffer_s, 0.0, last
            for i in plan:
                dl = lad[i] * d / pred
                if dl > buf:
                    q -= self.rebuf_weight * (dl - buf)
                    buf = 0.0
                else:
                    buf -= dl
                buf = min(buf + d, ctx.max_buffer_s)
                q += lad[i] - self.switch_weight * abs(lad[i] - prev)
                prev = lad[i]
            if q > best_q:
                best, best_q = plan[0], q
        return best


POLICIES: dict[str, type] = {p.name: p for p in (Throughput, Bba, Bola, Mpc)}


def load_policy(spec: str) -> AbrPolicy:
    """A policy by built-in name (``throughput``, ``bba``, ``bola``, ``mpc``) or ``module:Class``."""
    if spec in POLICIES:
        return POLICIES[spec]()
    if ":" not in spec:
        raise ValueError(f"unknown ABR policy {spec!r}: built-in {sorted(POLICIES)}, or module:Class")
    mod, _, cls = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(mod), cls)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"ABR policy {spec!r}: {e}") from None
    policy = obj()
    if not callable(getattr(policy, "choose", None)):
        raise ValueError(f"ABR policy {spec!r} has no choose(ctx) method")
    return policy


def check_choice(policy: AbrPolicy, ctx: AbrContext, choice: object) -> int:
    """The policy's answer as a ladder index, or ValueError naming the policy and what it returned."""
    if isinstance(choice, bool) or not isinstance(choice, int) or not 0 <= choice < len(ctx.bitrates_kbps):
        name = getattr(policy, "name", type(policy).__name__)
        raise ValueError(
            f"ABR policy {name} returned {choice!r}: it must be a ladder index 0..{len(ctx.bitrates_kbps) - 1}"
        )
    return choice
