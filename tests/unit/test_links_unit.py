"""Pure parts of the link layer: delay parsing, parameter validation, choosing netem vs relay, tc checks."""

from __future__ import annotations

import math
import select
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("mininet.link", reason="Mininet is not importable (run `sudo make setup`)")

from testbed.net import links, relay  # noqa: E402
from testbed.net.links import (  # noqa: E402
    LinkEmulationError,
    NetemLink,
    PlainLink,
    RateLink,
    RelayLink,
    check_htb,
    check_netem,
    check_pfifo,
    choose_link_class,
    default_queue_pkts,
    link_class_for,
    link_shape,
    parse_delay,
    parse_tc_rate,
)


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("20ms", 20.0),
        ("1.5ms", 1.5),
        (" 20 ms ", 20.0),
        ("500us", 0.5),
        ("0.1s", 100.0),
        ("2sec", 2000.0),
        ("150msec", 150.0),
        (20, 20.0),
        (2.5, 2.5),
        (0, 0.0),
        (None, None),
        ("", None),
    ],
)
def test_parse_delay_accepts(value, ms):
    assert parse_delay(value) == ms


@pytest.mark.parametrize(
    "value", ["20", "abc", "-1ms", "20 m", "ms", True, float("nan"), float("inf"), -5, [20]]
)
def test_parse_delay_rejects_with_message(value):
    with pytest.raises(ValueError, match="delay"):
        parse_delay(value)


def test_link_shape_symmetric_and_asymmetric():
    s = link_shape(delay="20ms", bw=50, loss=1)
    assert (s.delay_ab_ms, s.delay_ba_ms, s.bw_mbit, s.loss_pct, s.queue_pkts) == (
        20.0,
        20.0,
        50.0,
        1.0,
        None,
    )
    s = link_shape(delay_ms=5, delay_ms_ba=30)
    assert (s.delay_ab_ms, s.delay_ba_ms) == (5.0, 30.0)
    assert s.needs_emulation
    assert not link_shape(bw=10).needs_emulation
    assert link_shape(delay="20ms", delay_ms=20.0).delay_ab_ms == 20.0


@pytest.mark.parametrize(
    ("kw", "word"),
    [
        ({"delay": "20ms", "delay_ms": 30}, "disagree"),
        ({"bw": 0}, "bw"),
        ({"bw": -3}, "bw"),
        ({"bw": "fast"}, "bw"),
        ({"bw": 1e6}, "bw"),
        ({"loss": 101}, "loss"),
        ({"loss": -1}, "loss"),
        ({"max_queue_size": 0}, "max_queue_size"),
        ({"max_queue_size": 2.5}, "max_queue_size"),
        ({"delay_ms_ba": "x"}, "delay"),
        ({"max_queue_size": 1_000_001}, "max_queue_size"),
        ({"delay_ms": 10_001}, "delay"),
    ],
)
def test_link_shape_rejects(kw, word):
    with pytest.raises(ValueError, match=word):
        link_shape(**kw)


def test_the_spec_and_the_link_classes_have_one_set_of_limits():
    """Every link a spec accepts builds, and every one it refuses the link classes refuse too."""
    from testbed.net.spec import MAX_BW_MBIT, MAX_DELAY_MS, MAX_QUEUE_PKTS, LinkParams

    top = LinkParams(delay_ms=MAX_DELAY_MS, bw_mbit=MAX_BW_MBIT, queue_pkts=MAX_QUEUE_PKTS)
    assert link_shape(delay_ms=top.delay_ms, bw=top.bw_mbit, max_queue_size=top.queue_pkts).bw_mbit == MAX_BW_MBIT
    for field, value in (("bw_mbit", MAX_BW_MBIT * 1.5), ("delay_ms", MAX_DELAY_MS + 1),
                         ("queue_pkts", MAX_QUEUE_PKTS + 1)):
        with pytest.raises(ValueError, match=field):
            LinkParams(**{field: value})
    with pytest.raises(ValueError, match="bw"):
        link_shape(bw=MAX_BW_MBIT * 1.5)


def test_a_queue_alone_is_shaped_not_dropped():
    """A link with only ``queue_pkts`` is the delay line's limit in both modes, never a plain veth."""
    from testbed.net.spec import LinkParams

    assert LinkParams(queue_pkts=20).shaped
    no, yes = _probe(False)[0], _probe(True)[0]
    assert link_class_for("auto", no, max_queue_size=20) is RelayLink
    assert link_class_for("auto", yes, max_queue_size=20) is NetemLink
    assert link_class_for("auto", yes, bw=10, max_queue_size=20) is RateLink  # the rate's pfifo holds it
    a, b = SimpleNamespace(name="qa"), SimpleNamespace(name="qb")
    with pytest.raises(LinkEmulationError, match="cannot emulate"):  # a plain veth refuses, never drops it
        PlainLink.__init__(object.__new__(PlainLink), a, b, max_queue_size=20)


def test_default_queue_is_one_bdp_at_least_100():
    assert default_queue_pkts(50, 40) == math.ceil(50e6 / 8 * 0.040 / 1500) == 167
    assert default_queue_pkts(1, 1) == 100
    assert link_shape(delay_ms=20, bw=50).bottleneck_queue == 167
    assert link_shape(delay_ms=20, bw=50, max_queue_size=33).bottleneck_queue == 33


def _probe(result: bool):
    calls = []

    def probe() -> bool:
        calls.append(1)
        return result

    return probe, calls


def test_choose_auto_follows_probe():
    p, calls = _probe(True)
    assert choose_link_class("auto", p) == "netem"
    assert calls
    assert choose_link_class("auto", _probe(False)[0]) == "relay"


def test_choose_forced_netem_absent_is_a_clear_error():
    with pytest.raises(LinkEmulationError, match="netem.*forced"):
        choose_link_class("netem", _probe(False)[0])
    assert choose_link_class("netem", _probe(True)[0]) == "netem"


def test_choose_relay_does_not_probe():
    p, calls = _probe(True)
    assert choose_link_class("relay", p) == "relay"
    assert calls == []


def test_choose_bad_mode():
    with pytest.raises(ValueError, match="auto, netem or relay"):
        choose_link_class("tc", _probe(True)[0])


def test_link_class_for_each_case():
    no, yes = _probe(False)[0], _probe(True)[0]
    assert link_class_for("auto", no) is PlainLink
    assert link_class_for("auto", no, bw=10) is RateLink
    assert link_class_for("auto", no, delay="5ms") is RelayLink
    assert link_class_for("auto", no, loss=1) is RelayLink
    assert link_class_for("auto", yes, delay_ms=5, bw=10) is NetemLink
    assert link_class_for("relay", yes, delay_ms=5) is RelayLink
    with pytest.raises(ValueError):
        link_class_for("auto", no, delay="5")


def test_netem_available_probes_once(monkeypatch):
    calls = []
    monkeypatch.setattr(links, "netem_probe", lambda: (calls.append(1), (False, "absent"))[1])
    links.netem_available.cache_clear()
    try:
        assert links.netem_available() is False
        assert links.netem_available() is False
        assert calls == [1]
    finally:
        links.netem_available.cache_clear()


def test_parse_tc_rate():
    assert parse_tc_rate("50Mbit") == 50e6
    assert parse_tc_rate("1500Kbit") == 1.5e6
    assert parse_tc_rate("2Gbit") == 2e9
    assert parse_tc_rate("125000bps") == 1e6
    with pytest.raises(ValueError):
        parse_tc_rate("fast")


def test_check_htb():
    out = "class htb 5:1 root leaf 10: prio 0 rate 50Mbit ceil 50Mbit burst 15Kb cburst 1600b \n"
    assert check_htb(out, 50) is None
    assert "expected 20" in check_htb(out, 20)
    assert "no HTB" in check_htb("", 50)


def test_check_netem():
    out = "qdisc netem 10: parent 5:1 limit 1000 delay 20ms loss 1%\n"
    assert check_netem(out, 20, 1) is None
    assert "expected 30" in check_netem(out, 30, None)
    assert "loss" in check_netem(out, 20, 2)
    assert "not installed" in check_netem("qdisc noqueue 0: root refcnt 2\n", 20, None)
    assert "no delay" in check_netem("qdisc netem 10: root limit 1000\n", 5, None)
    assert check_netem("qdisc netem 10: root limit 1000 delay 500us\n", 0.5, None) is None
    assert check_netem("qdisc netem 1: root refcnt 2 limit 10000\n", 0, None, limit=10000) is None
    assert "limit is not 100" in check_netem(out, 20, 1, limit=100)
    assert "where the spec has none" in check_netem(out, 0, 1)


def test_check_pfifo():
    out = ("qdisc netem 1: root refcnt 2 limit 10000 delay 5ms\nqdisc htb 5: parent 1:1 r2q 10 default 0x1\n"
           "qdisc pfifo 10: parent 5:1 limit 100p\n")
    assert check_pfifo(out, 100) is None
    assert "is 100 packets, expected 38" in check_pfifo(out, 38)
    assert "no pfifo" in check_pfifo("qdisc netem 1: root limit 1000\n", 100)


def test_netem_commands_put_the_queue_after_the_delay_line():
    """netem at the root, the rate limiter and its queue under it: the queue holds only frames waiting to
    be sent (Mininet's TCLink has netem under HTB, whose limit also counts frames in flight)."""
    shape = link_shape(delay_ms=500, delay_ms_ba=0, bw=1.5, max_queue_size=100, loss=1)
    cmds = links.netem_commands("eth0", shape, 500)
    assert "del dev eth0 root" in cmds[0]
    assert cmds[1] == "tc qdisc add dev eth0 root handle 1: netem limit 10000 delay 500ms loss 1%"
    assert cmds[2] == "tc qdisc add dev eth0 parent 1:1 handle 5: htb default 1"
    assert "htb rate 1.5mbit" in cmds[3] and cmds[4].endswith("pfifo limit 100")
    assert not any("del dev" in c for c in cmds[1:])  # the child does not remove its parent
    back = links.netem_commands("eth1", shape, shape.delay_ba_ms)  # 0 ms one way: netem still there
    assert back[1] == "tc qdisc add dev eth1 root handle 1: netem limit 10000 delay 0ms loss 1%"
    alone = links.netem_commands("eth2", link_shape(max_queue_size=20), 0)
    assert alone[1:] == ["tc qdisc add dev eth2 root handle 1: netem limit 20 delay 0ms"]


def test_htb_commands_shape():
    cmds = links.htb_commands("eth9", 50, 167)
    assert "del dev eth9 root" in cmds[0] and cmds[0].endswith("|| true")  # re-applying starts clean
    assert "htb rate 50mbit" in cmds[2]
    assert cmds[3].endswith("pfifo limit 167")


def test_unsupported_tclink_params_are_refused():
    with pytest.raises(LinkEmulationError, match="jitter"):
        links._pop_shape({"delay": "5ms", "jitter": "1ms"})
    with pytest.raises(LinkEmulationError, match="bad link parameters"):
        links._pop_shape({"loss": 150})


def test_relay_args_validation():
    a = relay.parse_args(["--a", "x", "--b", "y", "--delay-ms", "20"])
    assert (a.delay_ms, a.delay_ms_ba, a.queue_pkts) == (20.0, None, 10000)
    for bad in (["--loss-pct", "150"], ["--delay-ms", "-1"], ["--queue-pkts", "0"]):
        with pytest.raises(SystemExit):
            relay.parse_args(["--a", "x", "--b", "y", *bad])


def test_relay_timerfd_fires_at_absolute_deadline():
    t = relay.Timer()
    ep = select.epoll()
    ep.register(t.fd, select.EPOLLIN)
    deadline = time.monotonic_ns() + 5_000_000
    t.arm(deadline)
    assert ep.poll(2.0)
    assert time.monotonic_ns() >= deadline
    t.clear()
    t.arm(0)  # disarmed: no event
    assert ep.poll(0.05) == []
