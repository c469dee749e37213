"""CDN commands in Mininet's CLI (``cdnlab up``): look at and poke the running CDN.

``cdn``, ``fetch CLIENT URL [--via anycast|dns|redirect]``, ``fail HOST [process|host|link]``,
``recover HOST``, ``dig CLIENT NAME``, ``capture LINK [SECONDS]``, ``rtt SRC DST``; ``help CMD`` explains each.
Every Mininet command (``pingall``, ``c_eu1 curl ...``, ``xterm``) still works.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time

from mininet.cli import CLI
from mininet.node import Controller

from testbed.net.cdn import CUSTOMER_NAME, SERVICE_MODULES
from testbed.net.containment import NamespaceError


class CdnCLI(CLI):
    """Mininet's CLI plus CDN commands."""

    prompt = "cdnlab> "

    def __init__(self, cdnnet, **kwargs) -> None:
        self.cn = cdnnet
        self.failed: dict[str, str] = {}
        super().__init__(cdnnet.net, **kwargs)

    # -- helpers -----------------------------------------------------------------------------------
    @property
    def svc(self):
        return getattr(self.cn, "services", None)

    def _args(self, line: str, n: int, usage: str) -> list[str] | None:
        try:
            args = shlex.split(line)
        except ValueError as e:
            print(f"*** {e}")
            return None
        if len(args) < n:
            print(f"usage: {usage}")
            return None
        return args

    def _node(self, name: str):
        """Any node of the network (a host or a switch, to capture on), else None with a message."""
        if name not in self.mn or isinstance(self.mn[name], Controller):
            print(f"*** no host or switch named {name!r}")
            return None
        return self.mn[name]

    def _host(self, name: str):
        """The emulated host ``name`` to run a command in (never a root-namespace node), else None."""
        try:
            return self.cn.host(name)
        except NamespaceError as e:
            print(f"*** {e}")
            return None

    def default(self, line: str) -> None:
        """``NODE CMD`` as in Mininet, except on the controller node, which runs in the machine's root
        namespace: its packets for emulated addresses would leave through the machine's real uplink."""
        first = line.split()[0] if line.split() else ""
        if first in self.mn and isinstance(self.mn[first], Controller):
            print(f"*** {first} is the SDN controller's node in the machine's root namespace, not an emulated "
                  "host; run commands on a host instead (see `nodes`)")
            return
        super().default(line)

    # -- commands ----------------------------------------------------------------------------------
    def do_cdn(self, line: str) -> None:
        """cdn: the CDN at a glance — edges with health and cache stats, anycast VIPs and choices."""
        t = self.cn.topo
        probe = next((h.name for h in t.hosts_with("client")), t.hosts[0].name)
        for e in t.hosts_with("edge"):
            state = self.failed.get(e.name, "up")
            stats = ""
            if self.svc is not None and state == "up":
                out = self.cn.host(probe).cmd(f"curl -s -m 2 http://{self.cn.ip(e.name)}/_cdn/stats")
                try:
                    st = json.loads(out[out.index("{"):])
                    stats = (f"hits {st.get('hits', 0)} misses {st.get('misses', 0)} "
                             f"cache {st.get('store', {}).get('bytes_used', '?')} B")
                except ValueError:
                    stats = "not answering"
            print(f"edge {e.name:<8} {self.cn.ip(e.name):<15} {e.region or '-':<6} {state:<8} {stats}")
        for a in t.anycast:
            print(f"anycast {a.name} {a.vip}:{a.port} members {', '.join(a.members)}")
        if self.cn.controller_mode == "ryu":
            try:
                any_ = self.cn.rest("/anycast")
                print(json.dumps(any_, indent=1)[:3000])
            except OSError as e:
                print(f"controller REST API not answering: {e}")

    def do_fetch(self, line: str) -> None:
        """fetch CLIENT URL_OR_PATH [--via anycast|dns|redirect]: fetch like a browser from CLIENT and show
        the time per phase, the edge that answered and its cache verdict. A bare path (/img/img0001.jpg)
        is fetched by the chosen method (default anycast)."""
        args = self._args(line, 2, "fetch CLIENT URL_OR_PATH [--via anycast|dns|redirect]")
        node = self._host(args[0]) if args else None
        if node is None:
            return
        via = "anycast"
        if "--via" in args:
            i = args.index("--via")
            via = args[i + 1] if i + 1 < len(args) else ""
            args = args[:i] + args[i + 2:]
        if via not in ("anycast", "dns", "redirect"):
            print("*** --via takes anycast, dns or redirect")
            return
        client, url = args[0], args[1]
        if url.startswith("/"):
            if via == "anycast" and self.cn.topo.anycast:
                url = f"http://{self.cn.topo.anycast[0].vip}{url}"
            elif via == "redirect" and self.svc and self.svc.redirectors:
                url = f"http://{self.cn.ip(self.svc.redirectors[0])}{url}"
            elif via == "dns" and self.svc and self.svc.resolver_for(client):
                res = self.cn.ip(self.svc.resolver_for(client))
                ans = node.cmd(f"dig +short +time=2 +tries=1 @{res} {CUSTOMER_NAME} A").split()
                ips = [a for a in ans if a[:1].isdigit()]
                if not ips:
                    print(f"*** {CUSTOMER_NAME} did not resolve via {res}")
                    return
                print(f"{CUSTOMER_NAME} -> {' -> '.join(ans)} (resolver {res})")
                url = f"http://{ips[-1]}{url}"
            else:
                print(f"*** no {via} service in this CDN")
                return
        fmt = ("dns %{time_namelookup}s connect %{time_connect}s first-byte %{time_starttransfer}s "
               "total %{time_total}s redirects %{num_redirects} status %{http_code}\\n")
        out = node.cmd(f"curl -s -L -m 10 -o /dev/null -D - -w '{fmt}' {shlex.quote(url)}")
        for ln in out.splitlines():
            low = ln.lower()
            if low.startswith(("http/", "location:", "x-served-by:", "x-cache:", "age:", "cache-control:")) or \
                    low.startswith("dns "):
                print(ln)

    def do_fail(self, line: str) -> None:
        """fail HOST [process|host|link]: make any CDN host fail — its service process crashes (default),
        the host goes silent (service crashed, every packet to it dropped), or its access link goes down —
        and watch what clients see: an edge is routed around, an origin leaves the edges with what they
        hold, a DNS or resolver stops lookups, a redirector stops redirects. Clients take host or link."""
        args = self._args(line, 1, "fail HOST [process|host|link]")
        if not args or not self._host(args[0]):
            return
        host, kind = args[0], args[1] if len(args) > 1 else "process"
        if self.svc is None:
            print("*** no CDN services running (cdnlab up without --no-services)")
            return
        if host in self.failed:
            print(f"*** {host} already failed ({self.failed[host]}); `recover {host}` first")
            return
        try:
            effect = self.svc.fail(host, kind)
        except (ValueError, KeyError) as e:
            print(f"*** {e}")
            return
        self.failed[host] = kind
        role = self.cn.topo.host(host).role.value
        print(f"{host} ({role}): {kind} failure injected at {time.strftime('%H:%M:%S')}; {effect}")

    def do_recover(self, line: str) -> None:
        """recover HOST: undo `fail HOST` (link up, packets let in) and restart its service process, waiting
        until it answers again. On a host that was not failed, restarts its service."""
        args = self._args(line, 1, "recover HOST")
        if not args or not self._host(args[0]):
            return
        host = args[0]
        if self.svc is None:
            print("*** no CDN services running (cdnlab up without --no-services)")
            return
        role = self.cn.topo.host(host).role.value
        kind = self.failed.get(host)
        if kind is None and self.svc.service_process(host) is None and role not in SERVICE_MODULES:
            print(f"*** {host} is not failed (nothing to recover)")
            return
        print(f"{host} ({role}): recovering{' its service' if role in SERVICE_MODULES else ''} ...", flush=True)
        try:
            self.svc.recover(host, kind or "process")
        except (TimeoutError, ValueError) as e:
            print(f"*** {e}")
            return
        self.failed.pop(host, None)
        print(f"{host}: recovered")

    def do_dig(self, line: str) -> None:
        """dig CLIENT [NAME]: resolve NAME (default www.customer.example) through CLIENT's regional
        resolver and show the CNAME chain and TTLs — the answer depends on where the resolver is."""
        args = self._args(line, 1, "dig CLIENT [NAME]")
        node = self._host(args[0]) if args else None
        if node is None:
            return
        name = args[1] if len(args) > 1 else CUSTOMER_NAME
        res = self.svc.resolver_for(args[0]) if self.svc else None
        server = f"@{self.cn.ip(res)}" if res else ""
        print(node.cmd(f"dig +noall +answer +time=2 +tries=1 {server} {shlex.quote(name)}"))

    def do_capture(self, line: str) -> None:
        """capture NODE1 NODE2 [SECONDS]: capture packets on the link between two nodes (default 5 s)
        to a pcap in the run directory and print a summary (open it with Scapy or Wireshark)."""
        args = self._args(line, 2, "capture NODE1 NODE2 [SECONDS]")
        if not args:
            return
        a, b = self._node(args[0]), self._node(args[1])
        if a is None or b is None:
            return
        conns = a.connectionsTo(b)
        if not conns:
            print(f"*** no link between {args[0]} and {args[1]}")
            return
        intf = conns[0][0]
        secs = float(args[2]) if len(args) > 2 else 5.0
        pcap = self.cn.run_dir / f"capture-{args[0]}-{args[1]}-{int(time.time())}.pcap"
        cmd = ["timeout", str(secs), "tcpdump", "-n", "-s", "256", "-i", intf.name, "-w", str(pcap)]
        p = a.popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        print(f"capturing on {intf.name} for {secs:g} s ...")
        _, err = p.communicate(timeout=secs + 10)
        captured = [ln for ln in err.decode(errors="replace").splitlines() if "captured" in ln]
        print(f"{captured[0] if captured else 'no packets captured'}; saved {pcap}")

    def do_rtt(self, line: str) -> None:
        """rtt SRC DST: median ping RTT in ms between two hosts, next to the configured path delay."""
        args = self._args(line, 2, "rtt SRC DST")
        if not args:
            return
        src, dst = args[0], args[1]
        if self._host(src) is None or self._host(dst) is None:
            return
        try:
            expected = 2 * self.cn.topo.path_delay_ms(src, dst)
            got = self.cn.ping_rtt_ms(src, self.cn.ip(dst), count=5)
        except KeyError as e:
            print(f"*** unknown host {e}")
            return
        print(f"{src} -> {dst}: measured {got} ms, configured path {expected:g} ms")
