"""CDN commands in Mininet's CLI (``cdnlab up``): look at and poke the running CDN."""

from __future__ import annotations

import json
import shlex

from mininet.cli import CLI


class CdnCLI(CLI):
    """Mininet's CLI plus CDN commands; ``help <command>`` explains each."""

    prompt = "cdnlab> "

    def __init__(self, cdnnet, **kwargs) -> None:
        self.cn = cdnnet
        super().__init__(cdnnet.net, **kwargs)

    def do_cdn(self, line: str) -> None:
        """cdn: the CDN at a glance — edges, anycast VIPs and the controller's choices."""
        t = self.cn.topo
        for e in t.hosts_with("edge"):
            print(f"edge {e.name:<8} {self.cn.ip(e.name):<15} region {e.region}")
        for a in t.anycast:
            print(f"anycast {a.name} {a.vip}:{a.port} members {', '.join(a.members)}")
        if self.cn.controller_mode == "ryu":
            try:
                print(json.dumps(self.cn.rest("/anycast"), indent=1))
            except OSError as e:
                print(f"controller REST API not answering: {e}")

    def do_rtt(self, line: str) -> None:
        """rtt SRC DST: median ping RTT in ms between two hosts, next to the configured path delay."""
        args = shlex.split(line)
        if len(args) != 2:
            print("usage: rtt SRC DST")
            return
        src, dst = args
        try:
            expected = 2 * self.cn.topo.path_delay_ms(src, dst)
            got = self.cn.ping_rtt_ms(src, self.cn.ip(dst), count=5)
        except KeyError as e:
            print(f"unknown host {e}")
            return
        print(f"{src} -> {dst}: measured {got} ms, configured path {expected:g} ms")
