"""Seeded workloads: Zipf(alpha) object popularity and Poisson request arrivals.

Web object popularity follows Zipf's law: the k-th most popular object is requested with probability
proportional to 1/k^alpha, a straight line on a log-log rank/frequency plot (lecture, "Content and
Internet Traffic"; Breslau et al., "Web Caching and Zipf-like Distributions", INFOCOM 1999, measured
alpha between 0.64 and 0.83 for proxy traces). Arrivals from one client are a Poisson process.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass


class Zipf:
    """Draw ranks 1..n with P(k) ∝ 1/k^alpha (alpha = 0 is uniform)."""

    def __init__(self, n: int, alpha: float, rng: random.Random) -> None:
        if n < 1:
            raise ValueError("Zipf needs at least one object")
        if alpha < 0:
            raise ValueError("alpha must be >= 0")
        self.n, self.alpha, self.rng = n, alpha, rng
        weights = [1.0 / (k**alpha) for k in range(1, n + 1)]
        self.cum = list(itertools.accumulate(weights))
        self.total = self.cum[-1]

    def pmf(self, k: int) -> float:
        return (1.0 / k**self.alpha) / self.total

    def rank(self) -> int:
        """A rank in 1..n."""
        return bisect.bisect_left(self.cum, self.rng.random() * self.total) + 1


def poisson_arrivals(rate_per_s: float, duration_s: float, rng: random.Random, start: float = 0.0) -> list[float]:
    """Arrival times (seconds from ``start``) of a Poisson process of the given rate."""
    if rate_per_s <= 0:
        return []
    t, out = start, []
    while True:
        t += rng.expovariate(rate_per_s)
        if t >= start + duration_s:
            return out
        out.append(t)


@dataclass(frozen=True)
class Request:
    at: float  # seconds after the workload starts
    client: str
    path: str
    rank: int


def zipf_workload(clients: Sequence[str], paths: Sequence[str], *, alpha: float, rate_per_s: float,
                  duration_s: float, seed: int) -> list[Request]:
    """Each client sends Poisson(rate) requests for Zipf(alpha)-popular paths (``paths`` in rank order)."""
    rng = random.Random(seed)
    z = Zipf(len(paths), alpha, rng)
    reqs: list[Request] = []
    for c in clients:
        for at in poisson_arrivals(rate_per_s, duration_s, rng):
            k = z.rank()
            reqs.append(Request(at, c, paths[k - 1], k))
    reqs.sort(key=lambda r: (r.at, r.client))
    return reqs
