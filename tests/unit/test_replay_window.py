"""The anti-replay window of the multicast control messages (contract/replay_window.py, RFC 4303 §3.4.3).

Pure logic: duplicates, reordering inside the window, messages older than the window, the first contact
of a late joiner, 32-bit wrap-around (RFC 1982 serial arithmetic), sender restarts recognised by the
transmission timestamp, and a randomised comparison with a naive model that stores every number.
"""

from __future__ import annotations

import random

import pytest

from contract.replay_window import SEQ_MOD, ReplayWindow, Verdict

P = ("session", 7)  # a peer key, as the receivers use: (session_id, sender_id)


def admit_all(w: ReplayWindow, seqs: list[int], peer=P) -> list[Verdict]:
    return [w.admit(peer, s) for s in seqs]


def test_first_message_is_accepted_and_its_exact_replay_is_dropped() -> None:
    w = ReplayWindow(64)
    assert w.admit(P, 10) is Verdict.NEW
    assert w.admit(P, 10) is Verdict.DUPLICATE
    assert w.admit(P, 11) is Verdict.ACCEPTED
    assert w.admit(P, 11) is Verdict.DUPLICATE and w.admit(P, 10) is Verdict.DUPLICATE
    assert w.counts == {"new": 1, "accepted": 1, "duplicate": 3}
    assert w.top(P) == 11 and len(w) == 1


def test_reordered_messages_inside_the_window_are_accepted_once() -> None:
    w = ReplayWindow(64)
    order = [100, 105, 102, 101, 104, 103, 160, 110, 106, 163, 161]
    assert all(v.ok for v in admit_all(w, order))
    assert w.top(P) == 163
    assert not any(v.ok for v in admit_all(w, order))  # every one of them again: all dropped
    assert w.admit(P, 162) is Verdict.ACCEPTED  # the one gap left is still open


def test_messages_left_of_the_window_are_too_old() -> None:
    w = ReplayWindow(64)
    w.admit(P, 100)
    w.admit(P, 200)
    assert w.admit(P, 136) is Verdict.TOO_OLD  # 200 - 136 = 64: just outside a 64-bit window
    assert w.admit(P, 137) is Verdict.ACCEPTED  # 63 behind, never seen: inside
    assert w.admit(P, 137) is Verdict.DUPLICATE
    assert w.admit(P, 100) is Verdict.TOO_OLD  # accepted once, long ago


def test_a_jump_far_ahead_slides_the_whole_window() -> None:
    w = ReplayWindow(1024)
    w.admit(P, 1)
    assert w.admit(P, 1_000_000) is Verdict.ACCEPTED
    assert w.admit(P, 999_999) is Verdict.ACCEPTED and w.admit(P, 999_000) is Verdict.ACCEPTED
    assert w.admit(P, 1) is Verdict.TOO_OLD


def test_a_late_joiner_presumes_everything_before_its_first_message_seen() -> None:
    """It cannot know which earlier numbers it was sent, so it accepts none of them (no old replays)."""
    w = ReplayWindow(64)
    assert w.admit(P, 500) is Verdict.NEW
    assert w.admit(P, 499) is Verdict.DUPLICATE
    assert w.admit(P, 437) is Verdict.DUPLICATE and w.admit(P, 436) is Verdict.TOO_OLD
    assert w.admit(P, 502) is Verdict.ACCEPTED and w.admit(P, 501) is Verdict.ACCEPTED


def test_sequence_numbers_wrap_at_2_to_the_32() -> None:
    w = ReplayWindow(64)
    start = SEQ_MOD - 5
    assert w.admit(P, start) is Verdict.NEW
    order = [SEQ_MOD - 3, 1, SEQ_MOD - 4, 0, SEQ_MOD - 1, 2, SEQ_MOD - 2]  # reordered across the wrap
    assert all(v is Verdict.ACCEPTED for v in admit_all(w, order)), w.counts
    assert w.top(P) == 2
    assert not any(v.ok for v in admit_all(w, [start, *order]))
    assert w.admit(P, 3) is Verdict.ACCEPTED  # counting on after the wrap


def test_half_the_number_space_ahead_is_not_ahead() -> None:
    """RFC 1982: s is after t when (s - t) mod 2**32 is in [1, 2**31); exactly 2**31 is not."""
    w = ReplayWindow(64)
    w.admit(P, 10)
    assert w.admit(P, 10 + (1 << 31)) is Verdict.TOO_OLD
    assert w.admit(P, 10 + (1 << 31) - 1) is Verdict.ACCEPTED


def test_peers_are_independent_and_the_least_recently_heard_is_forgotten() -> None:
    w = ReplayWindow(64, max_peers=2)
    w.admit("a", 5)
    w.admit("b", 5)
    assert w.admit("a", 5) is Verdict.DUPLICATE  # "a" heard again: now "b" is the oldest
    w.admit("c", 9)
    assert len(w) == 2 and w.top("b") is None and w.top("a") == 5
    w.forget("a")
    assert w.admit("a", 5) is Verdict.NEW


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(0)
    with pytest.raises(ValueError):
        ReplayWindow(64, max_peers=0)
    w = ReplayWindow(64)
    for bad in (-1, SEQ_MOD):
        with pytest.raises(ValueError):
            w.admit(P, bad)


# ---------------------------------------------------------------------------------------------- restarts


def test_a_restarted_sender_is_accepted_again_by_its_newer_timestamp() -> None:
    w = ReplayWindow(64)
    old = [(seq, 1_000_000 + seq) for seq in range(1, 51)]  # (seq, transmission time in µs)
    assert all(w.admit(P, s, t).ok for s, t in old)
    # the sender restarts: sequence numbers from 1 again, timestamps later than any before
    assert w.admit(P, 1, 2_000_000) is Verdict.RESTART
    assert w.admit(P, 2, 2_000_001) is Verdict.ACCEPTED and w.admit(P, 4, 2_000_003) is Verdict.ACCEPTED
    # the new incarnation's messages are protected like any others ...
    assert w.admit(P, 2, 2_000_001) is Verdict.DUPLICATE
    assert w.admit(P, 3, 2_000_002) is Verdict.ACCEPTED  # (reordered inside the window)
    # ... and the old incarnation's are dropped, even those numbered ahead of the new ones
    for s, t in [old[-1], old[0], old[3]]:
        assert w.admit(P, s, t) is Verdict.STALE, s
    assert w.counts["restart"] == 1 and w.counts["stale"] == 3


def test_a_replay_with_an_old_timestamp_cannot_restart_the_window() -> None:
    w = ReplayWindow(64)
    for seq in range(1, 11):
        w.admit(P, seq, 1000 + seq)
    assert w.admit(P, 5, 1005) is Verdict.DUPLICATE
    assert w.admit(P, 10, 1010) is Verdict.DUPLICATE  # the newest one again: equal, not newer
    assert w.admit(P, 11, 1011) is Verdict.ACCEPTED


def test_messages_without_a_timestamp_never_restart_the_window() -> None:
    """An INVALIDATE or NACK carries no transmission time: only the sequence window judges it."""
    w = ReplayWindow(64)
    for seq in range(1, 11):
        w.admit(P, seq, 1000 + seq)
    assert w.admit(P, 1) is Verdict.DUPLICATE
    assert w.admit(P, 12) is Verdict.ACCEPTED  # untimestamped messages slide it normally
    assert w.admit(P, 11, 1011) is Verdict.ACCEPTED


def test_a_late_joiner_takes_its_floor_from_the_first_timestamp() -> None:
    w = ReplayWindow(64)
    assert w.admit(P, 500, 5000) is Verdict.NEW
    assert w.admit(P, 400_000, 4000) is Verdict.STALE  # ahead in numbers, but sent before the first one
    assert w.admit(P, 501, 5001) is Verdict.ACCEPTED


# ---------------------------------------------------------------------------------------------- model


@pytest.mark.parametrize("offset", [0, SEQ_MOD - 700, (1 << 31) - 300])
@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_a_model_that_remembers_every_number(seed: int, offset: int) -> None:
    """Random traffic (reordered, duplicated, with jumps) through the window and through a naive model
    that keeps every accepted number in a set; ``offset`` shifts the numbers across the 32-bit wrap."""
    rng = random.Random(seed)
    size = 32
    w = ReplayWindow(size)
    seen: set[int] = set()
    first = top = None
    nxt = 1000  # numbers before the first one heard exist (a late joiner)
    for _ in range(3000):
        r = rng.random()
        if r < 0.5:
            s, nxt = nxt, nxt + rng.choice((1, 1, 1, 2, 5, 40))
        elif seen and r < 0.8:
            s = rng.choice(sorted(seen)[-50:])  # replay of something recent
        else:
            s = max(1, nxt - rng.randrange(1, 3 * size))  # late or old
        if first is None:
            want = True
            first = top = s
        else:
            want = s not in seen and s > first and s > top - size
        assert w.admit(P, (s + offset) % SEQ_MOD).ok is want, (s, top)
        if want:
            seen.add(s)
            top = max(top, s)


def test_a_timestamped_message_older_than_max_age_is_stale_even_at_first_contact() -> None:
    w = ReplayWindow(max_age_us=30_000_000)
    now = 10**15
    assert w.admit(P, 500, now - 31_000_000, now) is Verdict.STALE  # a recording: leaves no state
    assert w.top(P) is None and len(w) == 0
    assert w.admit(P, 7, now - 29_000_000, now) is Verdict.NEW  # the live sender, numbered lower: heard
    assert w.admit(P, 8, now - 1_000, now) is Verdict.ACCEPTED
    assert w.admit(P, 9, None, now) is Verdict.ACCEPTED  # no timestamp: not bounded
    assert w.admit(("other", 1), 10, now - 60_000_000) is Verdict.NEW  # no clock given: not bounded
    assert w.counts["stale"] == 1


def test_max_age_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_age_us"):
        ReplayWindow(max_age_us=0)
