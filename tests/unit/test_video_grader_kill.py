"""The video lab's hidden network check kills the serving edge at the same point of a download for every
policy: ``KILL_INTO_SEGMENT_S`` after the player's next segment comes in, never at a bare wall time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from testbed import grade

GRADER = grade.load_lab("video-streaming").grader


class _Player:
    """A stand-in for the player's Popen: running until ``end()``."""

    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code


def _log(path: Path, rows: int) -> None:
    path.write_text("number,bitrate_kbps\n" + "".join(f"{i},300\n" for i in range(rows)))


def _kill_time(p: dict, timeout: float) -> float:
    killed: list[float] = []
    GRADER._kill_into_a_segment(p, lambda: killed.append(time.monotonic()), timeout)
    assert len(killed) == 1
    return killed[0]


def test_the_kill_lands_half_a_second_after_the_next_segment_comes_in(tmp_path: Path) -> None:
    log = tmp_path / "mine.csv"
    _log(log, 3)
    p = {"popen": _Player(), "log": log}
    arrived: list[float] = []

    def segment_later() -> None:
        time.sleep(0.4)
        _log(log, 4)
        arrived.append(time.monotonic())

    t = threading.Thread(target=segment_later)
    t.start()
    killed = _kill_time(p, timeout=10)
    t.join()
    # not at once (the rows already there do not count), and not before the new download is under way
    assert killed - arrived[0] >= GRADER.KILL_INTO_SEGMENT_S
    assert killed - arrived[0] < GRADER.KILL_INTO_SEGMENT_S + 0.5


def test_a_player_that_ended_or_a_timeout_gets_the_kill_at_once(tmp_path: Path) -> None:
    log = tmp_path / "mine.csv"
    _log(log, 2)
    ended = _Player()
    ended.code = 0
    t0 = time.monotonic()
    assert _kill_time({"popen": ended, "log": log}, timeout=10) - t0 < 0.3
    t0 = time.monotonic()
    assert 0.3 <= _kill_time({"popen": _Player(), "log": log}, timeout=0.3) - t0 < 0.6
    # no log yet (the player has not started writing): waits for its first segment like any other
    assert GRADER._segments_in({"log": tmp_path / "absent.csv"}) == 0
