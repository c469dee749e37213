"""The one parser of ping's output (testbed.measure.ping), on iputils ping's real output."""

from __future__ import annotations

from testbed.measure import ping

OUT = """PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.
64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=40.4 ms
64 bytes from 10.0.0.2: icmp_seq=3 ttl=64 time=102 ms

--- 10.0.0.2 ping statistics ---
3 packets transmitted, 2 received, 33.3333% packet loss, time 2003ms
rtt min/avg/max/mdev = 40.412/71.206/102.001/30.794 ms
"""


def test_per_packet_times_in_order_lost_ones_missing():
    assert ping.parse_packet_rtts(OUT) == [40.4, 102.0]
    assert ping.parse_packet_rtts("2 packets transmitted, 0 received, 100% packet loss") == []


def test_summary_lines_give_microsecond_minimums():
    assert ping.parse_summary_rtts(OUT + OUT.replace("40.412", "39.998")) == [40.412, 39.998]


class _Host:
    def __init__(self, out: str) -> None:
        self.out, self.cmds = out, []

    def cmd(self, c: str) -> str:
        self.cmds.append(c)
        return self.out


def test_rtts_run_inside_the_host_and_median_is_none_when_nothing_answered():
    h = _Host(OUT)
    assert ping.rtts(h, "10.0.0.2", count=3) == [40.4, 102.0]
    assert h.cmds == ["ping -n -c 3 -i 0.05 -W 2 10.0.0.2"]
    assert ping.median([40.4, 102.0]) == 71.2 and ping.median([]) is None
    h = _Host("rtt min/avg/max/mdev = 10.101/10.101/10.101/0.000 ms\n")
    assert ping.precise_rtts(h, "10.0.0.2", count=1, warmup=0) == [10.101] and len(h.cmds) == 1
