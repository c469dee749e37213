"""The relay reads the kernel's receive stamps (CLOCK_REALTIME) on its own clock (CLOCK_MONOTONIC) through
an offset; a pause between the two clock reads must not make that offset, and so every release, early."""

from __future__ import annotations

import time

from testbed.net.relay import realtime_offset_ns

OFFSET = 1_700_000_000_000_000_000  # realtime - monotonic of the fake clocks


class PausingClocks:
    """Monotonic time advances 1 µs per read, plus a pause after the monotonic reads listed."""

    def __init__(self, pauses: dict[int, int]) -> None:
        self.t = 5_000_000_000
        self.reads = 0
        self.pauses = pauses

    def mono(self) -> int:
        self.t += 1_000
        self.reads += 1
        now = self.t
        self.t += self.pauses.get(self.reads, 0)
        return now

    def wall(self) -> int:
        self.t += 1_000
        return self.t + OFFSET


def test_a_pause_between_the_reads_does_not_move_the_offset():
    # the first bracket is paused by 3 ms (as under TCG); the second is tight and wins
    clocks = PausingClocks({1: 3_000_000})
    off = realtime_offset_ns(clocks.wall, clocks.mono)
    assert abs(off - OFFSET) <= 1_000, off - OFFSET
    # the naive way (wall - mono, read one after the other) is 3 ms off: frames would leave 3 ms early
    naive = PausingClocks({1: 3_000_000})
    m = naive.mono()
    assert naive.wall() - m - OFFSET >= 3_000_000


def test_every_bracket_paused_keeps_the_tightest():
    clocks = PausingClocks({1: 4_000_000, 3: 1_000_000, 5: 2_000_000, 7: 3_000_000})
    off = realtime_offset_ns(clocks.wall, clocks.mono)
    assert abs(off - OFFSET) <= 1_000_000 // 2 + 2_000, off - OFFSET


def test_tight_first_reading_stops_at_once():
    clocks = PausingClocks({})
    realtime_offset_ns(clocks.wall, clocks.mono)
    assert clocks.reads == 2


def test_the_real_clocks():
    off = realtime_offset_ns(time.time_ns, time.monotonic_ns)
    assert abs((time.time_ns() - time.monotonic_ns()) - off) < 50_000_000
