"""Adaptive-bitrate policies (testbed/measure/abr.py): what each picks, loading by name, checking answers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from testbed.measure.abr import (
    POLICIES,
    AbrContext,
    Bba,
    Bola,
    Mpc,
    Throughput,
    check_choice,
    harmonic_mean,
    highest_below,
    load_policy,
)

LADDER = (300, 750, 1200, 2400, 4000, 6000)
TOP = len(LADDER) - 1


def ctx(
    buffer_s=10.0, tput=(), last=None, max_buffer_s=30.0, segment_s=2.0, ladder=LADDER, **kw
) -> AbrContext:
    return AbrContext(
        bitrates_kbps=ladder,
        segment_s=segment_s,
        buffer_s=buffer_s,
        max_buffer_s=max_buffer_s,
        last=last,
        throughput_kbps=tuple(tput),
        **kw,
    )


class MyPolicy:
    """A student's policy, loaded by ``module:Class``."""

    name = "mine"

    def choose(self, ctx: AbrContext) -> int:
        return len(ctx.bitrates_kbps) - 1


class NoChoose:
    name = "broken"


# ---- helpers ---------------------------------------------------------------------------------------------


def test_harmonic_mean_and_highest_below():
    assert harmonic_mean([]) == 0.0
    assert harmonic_mean([0.0, -1.0]) == 0.0
    assert harmonic_mean([1000.0, 4000.0]) == pytest.approx(1600.0)
    assert harmonic_mean([1000.0, 0.0, 4000.0]) == pytest.approx(1600.0)  # a zero sample is skipped
    assert highest_below(LADDER, 100) == 0
    assert highest_below(LADDER, 1200) == 2
    assert highest_below(LADDER, 1199.9) == 1
    assert highest_below(LADDER, 1e9) == TOP


# ---- throughput ------------------------------------------------------------------------------------------


def test_throughput_without_history_is_the_lowest():
    assert Throughput().choose(ctx(buffer_s=30)) == 0


def test_throughput_uses_the_harmonic_mean_of_the_last_five_with_a_safety_margin():
    # arithmetic mean 8200 -> 0.9 x = 7380 would pick 6000; harmonic mean 3571 -> 0.9 x = 3214 picks 2400
    tput = (10000, 10000, 10000, 10000, 1000)
    assert sum(tput) / 5 * 0.9 >= 6000
    assert Throughput().choose(ctx(tput=tput)) == 3
    # only the last five count: older samples, however low, are ignored
    assert Throughput().choose(ctx(tput=(50, 50, 50) + tput)) == 3
    # and the newest dominate: a recent high sample after old low ones does not
    assert Throughput().choose(ctx(tput=(100000,) + (1000,) * 5)) == 1  # 900 -> 750


@pytest.mark.parametrize(
    "samples,index",
    [
        ((1000,) * 5, 1),  # 900
        ((1333,) * 5, 1),  # 1199.7: just under 1200
        ((1334,) * 5, 2),  # 1200.6
        ((6667,) * 5, TOP),  # 6000.3
        ((6666,) * 5, 4),  # 5999.4
        ((100,) * 5, 0),  # under the lowest rung: still the lowest
    ],
)
def test_throughput_safety_factor_boundaries(samples, index):
    assert Throughput().choose(ctx(tput=samples)) == index


def test_throughput_parameters():
    assert Throughput(safety=1.0).choose(ctx(tput=(1200,) * 5)) == 2
    assert Throughput(window=1).choose(ctx(tput=(10000, 10000, 10000, 10000, 1000))) == 1
    assert Throughput(window=1).choose(ctx(tput=(1000, 1000, 1000, 1000, 10000))) == TOP


# ---- BBA ------------------------------------------------------------------------------------------------
# segment 2 s, max buffer 30 s: reservoir max(4, 6) = 6 s, cushion max(4, 18) = 18 s,
# f(B) = 300 + 5700 * (B - 6) / 18 between 6 s and 24 s


def bba_buffer_for(f_kbps: float) -> float:
    return 6.0 + (f_kbps - 300) / 5700 * 18


@pytest.mark.parametrize("last", [None, 0, 3, TOP])
def test_bba_reservoir_and_cushion(last):
    for b in (0.0, 3.0, 5.99, 6.0):
        assert Bba().choose(ctx(buffer_s=b, last=last)) == 0, b
    for b in (24.0, 25.0, 30.0):
        assert Bba().choose(ctx(buffer_s=b, last=last)) == TOP, b


def test_bba_reservoir_is_at_least_two_segments():
    # max buffer 10 s: 0.2 x 10 = 2 s, but two 2 s segments is 4 s
    assert Bba().choose(ctx(buffer_s=3.9, max_buffer_s=10, last=3)) == 0
    assert Bba().choose(ctx(buffer_s=4.2, max_buffer_s=10, last=0)) == 0  # f = 490, under 750: stays
    assert Bba().choose(ctx(buffer_s=4.6, max_buffer_s=10, last=0)) == 1  # f = 870: past 750
    # reservoir 4 + cushion max(4, 6) = 10 s: top at 10 s
    assert Bba().choose(ctx(buffer_s=10.0, max_buffer_s=10, last=0)) == TOP


def test_bba_hysteresis_keeps_the_last_rate_between_the_neighbours():
    b = bba_buffer_for(1500)  # f between 750 and 2400: the neighbours of 1200
    assert Bba().choose(ctx(buffer_s=b, last=2)) == 2
    b = bba_buffer_for(3000)  # between 2400 and 6000, the neighbours of 4000
    assert Bba().choose(ctx(buffer_s=b, last=4)) == 4
    # the map exactly on a neighbour's rate is not past it
    assert Bba().choose(ctx(buffer_s=bba_buffer_for(2400) - 1e-9, last=2)) == 2


def test_bba_moves_up_when_the_map_passes_the_next_rate_up():
    # from 1200 (index 2): f = 3000 passes 2400 -> the highest rate below f, 2400
    assert Bba().choose(ctx(buffer_s=bba_buffer_for(3000), last=2)) == 3
    # f = 4500 passes 2400 and 4000: the highest rate under it (more than one step)
    assert Bba().choose(ctx(buffer_s=bba_buffer_for(4500), last=2)) == 4
    # with no previous segment BBA starts from the lowest rung
    assert Bba().choose(ctx(buffer_s=bba_buffer_for(1500), last=None)) == 2
    assert Bba().choose(ctx(buffer_s=bba_buffer_for(700), last=None)) == 0


def test_bba_moves_down_when_the_map_passes_the_next_rate_down():
    # from 4000 (index 4): f = 1500 is under 2400 -> the lowest rate above f, 2400
    assert Bba().choose(ctx(buffer_s=bba_buffer_for(1500), last=4)) == 3
    # f = 500: the lowest rate above it is 750
    assert Bba().choose(ctx(buffer_s=bba_buffer_for(500), last=4)) == 1


# ---- BOLA -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_buffer_s", [30.0, 60.0])
def test_bola_empty_buffer_lowest_full_buffer_highest(max_buffer_s):
    assert Bola().choose(ctx(buffer_s=0.0, max_buffer_s=max_buffer_s)) == 0
    assert Bola().choose(ctx(buffer_s=1.0, max_buffer_s=max_buffer_s)) == 0
    assert Bola().choose(ctx(buffer_s=max_buffer_s - 1.0, max_buffer_s=max_buffer_s)) == TOP
    assert Bola().choose(ctx(buffer_s=max_buffer_s, max_buffer_s=max_buffer_s)) == TOP


@pytest.mark.parametrize(
    "ladder", [LADDER, (100, 200), (235, 375, 560, 750, 1050, 1750, 2350, 3000, 4300, 5800), (500, 20000)]
)
def test_bola_is_monotone_in_the_buffer_and_uses_the_whole_ladder(ladder):
    picks = [Bola().choose(ctx(buffer_s=q / 4, max_buffer_s=60.0, ladder=ladder)) for q in range(0, 241)]
    assert all(a <= b for a, b in zip(picks, picks[1:], strict=False)), picks
    assert picks[0] == 0 and picks[-1] == len(ladder) - 1
    # the choice does not depend on the last rung (BOLA-BASIC has no memory)
    for q in (5.0, 20.0, 40.0):
        assert {
            Bola().choose(ctx(buffer_s=q, max_buffer_s=60.0, ladder=ladder, last=i))
            for i in range(len(ladder))
        } == {Bola().choose(ctx(buffer_s=q, max_buffer_s=60.0, ladder=ladder))}


def test_bola_single_rung():
    assert Bola().choose(ctx(buffer_s=20, ladder=(1000,))) == 0


def test_bola_stays_low_until_its_minimum_buffer():
    for q in (0.0, 5.0, 9.9):
        assert Bola().choose(ctx(buffer_s=q, max_buffer_s=60.0)) == 0


# ---- MPC ------------------------------------------------------------------------------------------------


def test_mpc_without_history_is_the_lowest():
    assert Mpc().choose(ctx(buffer_s=30.0, last=TOP)) == 0


def test_mpc_high_stable_throughput_and_full_buffer_is_the_top():
    assert Mpc().choose(ctx(buffer_s=30.0, tput=(100_000,) * 5, last=TOP, segments_left=20)) == TOP
    assert Mpc().choose(ctx(buffer_s=30.0, tput=(100_000,) * 5, last=None)) == TOP


def test_mpc_throughput_below_the_lowest_rung_with_an_empty_buffer_is_the_lowest():
    assert Mpc().choose(ctx(buffer_s=0.0, tput=(100,) * 5, last=TOP)) == 0
    assert Mpc().choose(ctx(buffer_s=0.0, tput=(100,) * 5, last=None, segments_left=3)) == 0


def seasoned_mpc(history: tuple[float, ...], **kw) -> Mpc:
    """An Mpc instance that has seen ``history`` grow segment by segment (its record of predictions)."""
    m = Mpc()
    for k in range(len(history)):
        m.choose(ctx(tput=history[:k], **kw))
    return m


@pytest.mark.parametrize(
    "history",
    [
        (10000, 10000, 10000, 10000, 2000),  # it predicted 10000 for a 2000 segment: 400 % error
        (8000, 2000, 8000, 2000, 8000),  # every prediction far off
        (1000, 5000, 5000, 5000, 5000),  # it predicted 1000 for a 5000 segment: 80 % error
    ],
)
def test_mpc_past_prediction_errors_make_it_more_conservative(history):
    final = ctx(buffer_s=12.0, tput=history, last=3)
    fresh_choice = Mpc().choose(final)  # no record: nothing to discount by
    seasoned_choice = seasoned_mpc(history, buffer_s=12.0, last=3).choose(final)
    assert seasoned_choice < fresh_choice, (seasoned_choice, fresh_choice)


def test_mpc_accurate_predictions_leave_it_as_bold_as_a_fresh_instance():
    steady = (3000.0,) * 8
    final = ctx(buffer_s=12.0, tput=steady, last=3)
    assert seasoned_mpc(steady, buffer_s=12.0, last=3).choose(final) == Mpc().choose(final) == TOP


@pytest.mark.parametrize("steady_segments", [10, 12])
def test_mpc_errors_older_than_five_segments_are_forgotten(steady_segments):
    # one bad prediction (1000 predicted, 5000 measured), then a long steady 5000: once the 1000 has left
    # the five-segment window the harmonic mean predicts every segment exactly, and five segments later no
    # error is left to discount by
    history = (1000.0,) + (5000.0,) * steady_segments
    final = ctx(buffer_s=8.0, tput=history, last=3)
    assert seasoned_mpc(history, buffer_s=8.0, last=3).choose(final) == Mpc().choose(final) == TOP


@pytest.mark.parametrize("segments_left", [1, 0, 2])
def test_mpc_with_few_segments_left_returns_a_valid_index(segments_left):
    for buffer_s, tput, last in (
        (0.0, (500,) * 5, 3),
        (30.0, (100_000,) * 5, TOP),
        (10.0, (2000,) * 3, None),
    ):
        c = ctx(buffer_s=buffer_s, tput=tput, last=last, segments_left=segments_left)
        i = Mpc().choose(c)
        assert check_choice(Mpc(), c, i) == i
    # one segment left at the top with plenty of throughput: it stays at the top
    assert Mpc().choose(ctx(buffer_s=30.0, tput=(100_000,) * 5, last=TOP, segments_left=1)) == TOP


# ---- loading policies and checking their answers --------------------------------------------------------


@pytest.mark.parametrize("name", ["throughput", "bba", "bola", "mpc"])
def test_load_every_built_in_policy(name):
    assert name in POLICIES
    p = load_policy(name)
    assert isinstance(p, POLICIES[name]) and p.name == name
    assert load_policy(name) is not p  # a fresh instance each time (MPC keeps state)
    c = ctx(buffer_s=12.0, tput=(3000,) * 5, last=2, segments_left=10)
    assert 0 <= check_choice(p, c, p.choose(c)) <= TOP


def test_built_in_names():
    assert set(POLICIES) == {"throughput", "bba", "bola", "mpc"}
    assert POLICIES["throughput"] is Throughput and POLICIES["bba"] is Bba
    assert POLICIES["bola"] is Bola and POLICIES["mpc"] is Mpc


def test_load_a_policy_by_module_and_class():
    p = load_policy(f"{__name__}:MyPolicy")
    assert isinstance(p, MyPolicy) and p.name == "mine"
    assert p.choose(ctx()) == TOP
    builtin = load_policy("testbed.measure.abr:Bola")
    assert isinstance(builtin, Bola)


@pytest.mark.parametrize(
    "spec",
    [
        "nosuch",
        "Throughput",
        "",
        f"{__name__}:Nope",
        "no_such_module_for_abr:Policy",
        "testbed.measure.abr:nosuch",
    ],
)
def test_load_policy_errors_name_the_spec(spec):
    with pytest.raises(ValueError) as e:
        load_policy(spec)
    assert repr(spec) in str(e.value)


def test_load_policy_unknown_name_lists_the_built_ins():
    with pytest.raises(ValueError, match="unknown ABR policy 'nosuch'") as e:
        load_policy("nosuch")
    for name in POLICIES:
        assert name in str(e.value)


def test_load_policy_refuses_a_class_without_choose():
    with pytest.raises(ValueError, match="choose") as e:
        load_policy(f"{__name__}:NoChoose")
    assert f"{__name__}:NoChoose" in str(e.value)


@pytest.mark.parametrize("choice", [-1, len(LADDER), True, False, 1.5, "2", None, 2.0])
def test_check_choice_rejects(choice):
    with pytest.raises(ValueError) as e:
        check_choice(Bola(), ctx(), choice)
    msg = str(e.value)
    assert "bola" in msg and f"0..{TOP}" in msg and repr(choice) in msg


def test_check_choice_accepts_indices_and_names_unnamed_policies_by_class():
    for i in range(len(LADDER)):
        assert check_choice(Throughput(), ctx(), i) == i

    class Anonymous:
        def choose(self, ctx):
            return 9

    with pytest.raises(ValueError, match=r"Anonymous.*0\.\.1"):
        check_choice(Anonymous(), ctx(ladder=(300, 600)), 9)


def test_contexts_are_immutable():
    c = ctx()
    with pytest.raises(AttributeError):
        c.buffer_s = 3.0  # type: ignore[misc]
    assert replace(c, buffer_s=3.0).buffer_s == 3.0
