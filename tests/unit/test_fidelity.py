"""Whether the emulation kept up (testbed.net.fidelity): the verdict from relay counters, pure."""

from __future__ import annotations

from testbed.net.fidelity import LinkCounters, assess, merge, warning


def lc(name: str = "s1-e1 a->b", frames: int = 1000, late: int = 0, max_late: float = 0.0, mean: float = 0.01,
       drops: int = 0, qdrop: int = 0) -> LinkCounters:
    return LinkCounters(name, frames, late, max_late, mean, drops, qdrop)


def test_quiet_relays_keep_up() -> None:
    v = assess([lc(), lc("s1-s2 b->a", late=5, max_late=1.5)])
    assert v["keeping_up"] is True and v["problems"] == [] and v["frames"] == 2000 and v["late_frames"] == 5
    assert warning(v) is None


def test_socket_drops_late_frames_and_slow_links_each_fail_the_run() -> None:
    v = assess([lc(drops=3), lc("s2-s3 a->b")])
    assert v["keeping_up"] is False and "dropped 3 frames" in v["problems"][0] and "s1-e1 a->b: 3" in v["problems"][0]
    v = assess([lc(late=30, max_late=12.0)])  # 3 % late
    assert v["keeping_up"] is False and "30 of 1000 frames (3.0 %) left late" in v["problems"][0]
    assert "worst 12.0 ms late" in v["problems"][0]
    v = assess([lc(mean=0.8)])
    assert v["keeping_up"] is False and "late by more than 0.5 ms on average" in v["problems"][0]
    assert "could not keep up" in (warning(v) or "") and "--links netem" in (warning(v) or "")


def test_queue_drops_are_the_emulated_network_not_a_failure() -> None:
    v = assess([lc(qdrop=400)])
    assert v["keeping_up"] is True and v["queue_drops"] == 400


def test_send_errors_and_a_refused_real_time_priority_are_reported() -> None:
    """Send errors (the rate limiter's full queue, a link down) are counted, not judged; relays without
    real-time priority are counted, and named as a problem only when frames also left late."""
    quiet = LinkCounters("s1-e1 a->b", 1000, 0, 0.0, 0.01, 0, 0, send_errors=7)
    v = assess([quiet], realtime_refused=2)
    assert v["keeping_up"] is True and v["send_errors"] == 7 and v["realtime_refused"] == 2
    v = assess([lc(late=30, max_late=12.0)], realtime_refused=2)
    assert any("2 relay processes ran without real-time priority" in p for p in v["problems"]), v["problems"]
    assert merge([v, assess([quiet])])["send_errors"] == 7


def test_silent_relays_and_nothing_measured() -> None:
    v = assess([lc()], missing=["s1-e2"])
    assert v["keeping_up"] is False and "1 relays gave no counters: s1-e2" in v["problems"][0]
    v = assess([], unmeasured_links=7)  # netem links only: not measured, no verdict
    assert v["measured"] is False and v["keeping_up"] is None and warning(v) is None


def test_merge_of_several_networks() -> None:
    a, b = assess([lc()]), assess([lc(drops=1)])
    m = merge([a, b])
    assert m["networks"] == 2 and m["keeping_up"] is False and m["frames"] == 2000
    assert m["problems"][0].startswith("network 2: ")
    assert merge([a]) is a


def test_cpu_pressure_is_a_share_of_wall_time() -> None:
    from testbed.net.fidelity import cpu_pressure, pressure_pct

    assert pressure_pct((10.0, 1_000_000), (12.0, 2_000_000)) == 50.0  # 1 s of waiting in 2 s
    assert pressure_pct(None, (12.0, 0)) is None and pressure_pct((12.0, 0), (12.0, 5)) is None
    now = cpu_pressure()
    if now is not None:  # this kernel has PSI: the counter only grows
        later = cpu_pressure()
        assert later is not None and later[1] >= now[1] and later[0] >= now[0]


def test_a_cpu_bound_machine_fails_the_run_and_one_late_frame_on_a_quiet_link_does_not() -> None:
    v = assess([lc()], cpu_pressure_pct=60.2)
    assert v["keeping_up"] is False and "CPU bound 60 % of the time" in v["problems"][0]
    assert assess([lc()], cpu_pressure_pct=29.3)["keeping_up"] is True
    # 22 frames, one 11.6 ms late: a mean of 0.58 ms says nothing about the link's error
    assert assess([lc(), lc("z28-z32 a->b", frames=22, late=1, max_late=11.6, mean=0.58)])["keeping_up"] is True
    assert assess([], cpu_pressure_pct=10.0)["measured"] is True  # netem links, but PSI: still judged


def test_the_late_fraction_is_judged_over_at_least_100_frames() -> None:
    # one late frame among 20 (5 %) is a stray wake-up; two among 20 are 2 % of the 100 frames judged
    assert assess([lc(frames=20, late=1, max_late=3.0, mean=0.1)])["keeping_up"] is True
    v = assess([lc(frames=20, late=2, max_late=3.0, mean=0.1)])
    assert v["keeping_up"] is False and "2 of 20 frames" in v["problems"][0]
    assert assess([lc(frames=1000, late=11, max_late=3.0)])["keeping_up"] is False  # 1.1 % of 1000


def _line_topology():
    from testbed.net.spec import parse_topology

    spec = {"name": "t", "subnet": "10.9.0.0/16",
            "switches": [{"name": "s1"}, {"name": "s2"}, {"name": "s3"}],
            "links": [{"a": "s1", "b": "s2", "delay_ms": 5, "delay_ms_ba": 7}, {"a": "s2", "b": "s3", "delay_ms": 2}],
            "hosts": [{"name": "h1", "role": "client", "switch": "s1", "link": {"delay_ms": 1}},
                      {"name": "h2", "role": "client", "switch": "s2"},
                      {"name": "h3", "role": "edge", "switch": "s3", "link": {"delay_ms": 0.5}}]}
    return parse_topology(spec, "t")


def test_the_longest_path_and_the_rtt_its_links_add_up_to() -> None:
    from testbed.net.fidelity import longest_path, path_rtt_ms

    topo = _line_topology()
    src, dst, path = longest_path(topo)
    assert (src, dst) == ("h1", "h3") and path == ["h1", "s1", "s2", "s3", "h3"]
    # 1+1 (host link) + 5+7 (asymmetric) + 2+2 + 0.5+0.5
    assert path_rtt_ms(topo, path) == 19.0


def test_a_path_slower_than_its_links_by_more_than_max_1ms_or_2pct_is_a_problem() -> None:
    from testbed.net.fidelity import rtt_problem

    assert rtt_problem("a", "b", 4, 19.0, 19.9) is None  # 0.9 ms over: within 1 ms
    msg = rtt_problem("a", "b", 4, 19.0, 20.2)
    assert msg is not None and "adds 1.2 ms" in msg and "4 hops" in msg
    assert rtt_problem("a", "b", 9, 200.0, 203.9) is None  # 2 % of 200 ms is 4 ms
    assert rtt_problem("a", "b", 9, 200.0, 204.5) is not None
    assert "no ping" in (rtt_problem("a", "b", 9, 200.0, None) or "")


NETEM_TC = """qdisc netem 1: root refcnt 2 limit 10000 delay 500ms
 Sent 123456 bytes 120 pkt (dropped 31, overlimits 0 requeues 0)
 backlog 0b 0p requeues 0
qdisc htb 5: parent 1:1 r2q 10 default 0x1 direct_packets_stat 0 direct_qlen 1000
 Sent 100000 bytes 89 pkt (dropped 30, overlimits 120 requeues 0)
 backlog 0b 0p requeues 0
qdisc pfifo 10: parent 5:1 limit 20p
 Sent 100000 bytes 89 pkt (dropped 30, overlimits 0 requeues 0)
 backlog 0b 0p requeues 0
"""


def test_netem_counters_from_tc_stats() -> None:
    from testbed.net.fidelity import netem_totals

    lossy = ("qdisc netem 1: root refcnt 2 limit 10000 delay 0ms loss 1%\n"
             " Sent 10 bytes 10 pkt (dropped 1, overlimits 0 requeues 0)\n")
    assert netem_totals([NETEM_TC, lossy]) == {"directions": 2, "frames": 130, "dropped": 32, "queue_drops": 30}
    plain = "qdisc noqueue 0: root refcnt 2\n Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0)\n"
    assert netem_totals([plain]) == {"directions": 0, "frames": 0, "dropped": 0, "queue_drops": 0}


def test_reports_say_what_link_verification_found() -> None:
    from testbed.net.fidelity import links_sentence

    ok = {"classes": 2, "ok": True, "checks": [{"link_class": "a", "links": ["s1-s2"], "problems": []}] * 2}
    bad = {"classes": 1, "ok": False,
           "checks": [{"link_class": "20ms/50Mbit", "links": ["s1-s2", "s2-s3"], "problems": ["RTT 48 ms, not 40"]}]}
    assert "not verified" in links_sentence(None) and "not verified" in links_sentence(assess([lc()]))
    assert links_sentence({"links_verified": ok}).endswith("2 link classes, each within its spec.")
    s = links_sentence({"links_verified": bad})
    assert s.startswith("> **Links unlike their spec**") and "20ms/50Mbit (s1-s2, s2-s3): RTT 48 ms, not 40" in s
    m = merge([{**assess([lc()]), "links_verified": ok}, {**assess([lc()]), "links_verified": bad}, assess([lc()])])
    assert m["links_verified"]["classes"] == 3 and m["links_verified"]["ok"] is False
    assert "links_verified" not in merge([assess([lc()]), assess([lc()])])
