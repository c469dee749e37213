"""CDN commands in Mininet's CLI (``cdnlab up``): look at and poke the running CDN.

``cdn``, ``fetch CLIENT URL [--via anycast|dns|redirect]``, ``fail HOST [process|host|link]``,
``recover HOST``, ``dig CLIENT NAME``, ``capture LINK [SECONDS]``, ``rtt SRC DST``, ``stats HOST``,
``purge PATH [EDGE ...]``; ``help CMD`` explains each.
Every Mininet command (``pingall``, ``c_eu1 curl ...``, ``xterm``) still works.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from urllib.parse import urlsplit

from mininet.cli import CLI
from mininet.node import Controller

from testbed.net.containment import NamespaceError
from testbed.net.launch import CUSTOMER_NAME, SERVICE_MODULES
from testbed.util import json_in

#: the CDN's own commands, in the order `help` lists them, each with a one-line summary
CDN_COMMANDS = {
    "cdn": "the CDN at a glance: each edge's health, catchment, requests, hit ratio, cache",
    "fetch": "fetch from a client by anycast, DNS or redirect: time per phase, edge, cache verdict, errors",
    "play": "stream a DASH video from a client with an ABR policy: startup, stalls, bitrate, QoE",
    "dig": "resolve a name through the client's resolver: CNAME chain, TTLs, or the response code",
    "fail": "make a host fail (its service, the whole host, or its link) and see what clients see",
    "recover": "undo `fail` and wait until the host's service answers again",
    "rtt": "measured ping RTT between two hosts, next to the configured path delay",
    "capture": "capture the packets on a link to a pcap (open it with Scapy or Wireshark)",
    "stats": "a service's counters (edge, origin or redirector), asked with the run's management token",
    "purge": "purge objects from every edge (or the edges named), with the run's management token",
}


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


class CdnCLI(CLI):
    """Mininet's CLI plus CDN commands."""

    prompt = "cdnlab> "

    def __init__(self, cdnnet, **kwargs) -> None:
        self.cn = cdnnet
        self._own_failed: dict[str, str] = {}
        super().__init__(cdnnet.net, **kwargs)

    @property
    def failed(self) -> dict[str, str]:
        """host -> kind of the failures injected and not yet recovered (the services' own record, shared
        with the dashboard's actions)."""
        return self.svc.failed if self.svc is not None else self._own_failed

    def onecmd(self, line: str) -> bool:
        """Each command holds the network's lock: the dashboard's actions use the same host shells."""
        with self.cn.lock:
            return super().onecmd(line)

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
    def do_help(self, line: str) -> None:
        """help [CMD]: the CDN's commands first, then Mininet's; `help CMD` explains one."""
        if not line.strip():
            print("CDN commands (`help CMD` for more):")
            for name, summary in CDN_COMMANDS.items():
                usage = (getattr(self, f"do_{name}").__doc__ or name).split(":", 1)[0].strip()
                print(f"  {usage}\n      {summary}")
            print("\nMininet's commands (`h1 ping h2` runs a command on a host):")
        super().do_help(line)

    def _edge_rows(self) -> tuple[list[dict], dict]:
        """One dict per edge (stats, catchment, the controller's view of it), and the controller's
        ``GET /anycast`` (empty without the REST API)."""
        t = self.cn.topo
        anycast: dict = {}
        if self.cn.controller_mode == "ryu":
            try:
                anycast = self.cn.rest("/anycast")
            except OSError:
                anycast = {}
        catch: dict[str, list[str]] = {}
        members: dict[str, dict] = {}
        for svc in anycast.get("services", {}).values():
            for sw, m in (svc.get("choice") or {}).items():
                catch.setdefault(m, []).append(sw)
            members.update(svc.get("members", {}))
        rows = []
        for e in t.hosts_with("edge"):
            row: dict = {"edge": e.name, "address": self.cn.ip(e.name), "region": e.region,
                         "failed": self.failed.get(e.name), "catchment": sorted(catch.get(e.name, [])),
                         "controller": members.get(e.name)}
            if self.svc is not None and not row["failed"]:
                try:
                    row["stats"] = self.svc.service_stats(e.name)
                except RuntimeError:
                    row["stats"] = None
            rows.append(row)
        return rows, anycast

    def do_cdn(self, line: str) -> None:
        """cdn [--json]: the CDN at a glance: each edge's health, anycast catchment (the switches whose
        clients it serves), requests, hit ratio and cache size; `--json` prints the raw view."""
        rows, anycast = self._edge_rows()
        if "--json" in line.split():
            print(json.dumps({"edges": rows, "anycast": anycast or None}, indent=1, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{self.cn.topo.name}: edges", title_justify="left")
        for col in ("edge", "address", "region", "health", "catchment", "requests", "hit ratio", "cache"):
            table.add_column(col, justify="right" if col in ("requests", "hit ratio", "cache") else "left")
        for r in rows:
            st, ctl = r.get("stats"), r.get("controller") or {}
            if r["failed"]:
                health = f"failed ({r['failed']})"
            elif st is None and self.svc is not None:
                health = "not answering"
            elif ctl and not ctl.get("healthy", True):
                health = f"down: {ctl.get('reason') or 'unhealthy'}"
            else:
                health = "up"
            hits, misses = (st or {}).get("hits", 0), (st or {}).get("misses", 0)
            requests = hits + misses + (st or {}).get("uncachable", 0)
            ratio = f"{100 * hits / (hits + misses):.0f} %" if hits + misses else "-"
            cache = _size((st or {}).get("store", {}).get("bytes_used")) if st else "-"
            sws = r["catchment"]
            catchment = ", ".join(sws[:4]) + (f" +{len(sws) - 4}" if len(sws) > 4 else "") if sws else "-"
            table.add_row(r["edge"], r["address"], r["region"] or "-", health, catchment,
                          str(requests) if st else "-", ratio if st else "-", cache)
        console = Console(file=sys.stdout, width=max(100, Console().width))
        console.print(table)
        for a in self.cn.topo.anycast:
            print(f"anycast {a.name} {a.vip}:{a.port} members {', '.join(a.members)}")
        if self.cn.controller_mode != "ryu":
            print("(no controller REST API in this mode: catchments unknown)")

    def do_fetch(self, line: str) -> None:
        """fetch CLIENT PATH_OR_URL [--via anycast|dns|redirect]: fetch from CLIENT as the experiments do and
        show the time per phase (DNS, connect, redirect, first byte, total), the edge that answered, its
        cache verdict, and why a fetch failed. A path (/img/img0001.jpg) goes by the chosen method
        (default anycast); a URL (http://10.0.0.2/img/img0001.jpg) is fetched from that server directly."""
        args = self._args(line, 2, "fetch CLIENT PATH_OR_URL [--via anycast|dns|redirect]")
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
        opts = ["--timeout", "5"]
        if url.startswith(("http://", "https://")):
            u = urlsplit(url)
            if u.scheme != "http" or not u.hostname:
                print("*** only http:// URLs (the CDN speaks plain HTTP/1.1)")
                return
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            via, opts = "anycast", [*opts, "--vip", u.hostname, "--port", str(u.port or 80), "--name", u.hostname]
            print(f"fetching {url} directly (not through a selection method)")
        else:
            path = url
            if not path.startswith("/"):
                path = "/" + path
                print(f"note: paths start with '/': fetching {path}")
            steer = self._steering(client, via)
            if steer is None:
                return
            opts += steer
        out = node.cmd(shlex.join([sys.executable, "-m", "testbed.measure.fetch", path, "--via", via, *opts]))
        try:
            result = json_in(out)
        except ValueError:
            print(f"*** the fetch did not run: {out.strip()[-500:]}")
            return
        s, headers = result["sample"], result["headers"]
        print(f"dns {s['dns_ms']:.1f} ms  connect {s['connect_ms']:.1f} ms  redirect {s['redirect_ms']:.1f} ms  "
              f"first byte {s['ttfb_ms']:.1f} ms  total {s['total_ms']:.1f} ms")
        if headers.get("redirect-location"):
            print(f"redirected to {headers['redirect-location']}")
        if s["status"]:
            print(f"HTTP {s['status']}, {s['bytes']} bytes from {s['edge_ip']}")
            for h in ("x-served-by", "x-cache", "age", "cache-control"):
                if h in headers:
                    print(f"{'-'.join(w.capitalize() for w in h.split('-'))}: {headers[h]}")
        if result["explain"]:
            print(f"*** failed: {result['explain']}")

    def _steering(self, client: str, via: str) -> list[str] | None:
        """The options that send a measuring tool on ``client`` through method ``via`` (the anycast VIP,
        the client's resolver, or the redirector); None, said why, when the CDN has no such service."""
        args = self.svc.steering_args(client, via) if self.svc else None
        if args is None:
            print(f"*** no {via} service in this CDN")
            return None
        if via == "dns":
            res = args[1]
            chain = self.mn[client].cmd(f"dig +short +time=2 +tries=1 @{res} {CUSTOMER_NAME} A").split()
            if chain and not chain[0].startswith(";"):
                print(f"{CUSTOMER_NAME} -> {' -> '.join(chain)} (resolver {res})")
        return args

    def do_play(self, line: str) -> None:
        """play CLIENT [TITLE] [--via anycast|dns|redirect] [--policy P] [--duration S]: stream a DASH title
        (default testcard; testcard-live is live) from CLIENT with the headless player and an ABR policy
        (throughput, bba, bola, mpc), then show the session's startup delay, stalls, bitrate, switches,
        QoE and the edges that served it."""
        usage = "play CLIENT [TITLE] [--via anycast|dns|redirect] [--policy P] [--duration S]"
        args = self._args(line, 1, usage)
        if not args or self._host(args[0]) is None:
            return
        flags = {"--via": "anycast", "--policy": "throughput", "--duration": "20"}
        rest: list[str] = []
        i = 1
        while i < len(args):
            if args[i] in flags:
                if i + 1 >= len(args):
                    print(f"*** {args[i]} needs a value; usage: {usage}")
                    return
                flags[args[i]] = args[i + 1]
                i += 2
            else:
                rest.append(args[i])
                i += 1
        if len(rest) > 1 or flags["--via"] not in ("anycast", "dns", "redirect"):
            print(f"*** usage: {usage}")
            return
        try:
            duration = float(flags["--duration"])
        except ValueError:
            print(f"*** --duration takes seconds of video, not {flags['--duration']!r}")
            return
        client, title = args[0], (rest[0] if rest else "testcard")
        steer = self._steering(client, flags["--via"])
        if steer is None:
            return
        cmd = [sys.executable, "-m", "testbed.measure.player", f"/dash/{title}/manifest.mpd", "--via",
               flags["--via"], *steer, "--policy", flags["--policy"], "--duration", f"{duration:g}"]
        print(f"playing {title} on {client} by {flags['--via']} with {flags['--policy']} "
              f"({duration:g} s of video)...")
        out = self.mn[client].cmd(shlex.join(cmd))
        try:
            r = json_in(out)
        except ValueError:
            print(f"*** the player did not run: {out.strip()[-500:]}")
            return
        if r["segments"]:
            print(f"{r['segments']} segments: startup {r['startup_s']:.2f} s, {r['rebuffer_count']} stalls "
                  f"({r['rebuffer_s']:.2f} s, ratio {r['rebuffer_ratio']:.3f}), average "
                  f"{r['avg_bitrate_kbps']:.0f} kbit/s, {r['switches']} switches, QoE {r['qoe_per_segment']:.0f} "
                  f"per segment")
            print("served by " + ", ".join(f"{k} ({v})" for k, v in r["servers"].items()))
        if r["error"]:
            print(f"*** {r['error']}")

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
        print(f"{host}: recovered")

    def do_stats(self, line: str) -> None:
        """stats HOST: the counters of HOST's service (an edge's hits, misses, cache and purges; the
        origin's requests and faults; a redirector's redirects and edge health) as JSON. Control endpoints
        answer only requests with the run's management token, which this command sends from HOST itself; a
        client's own `curl .../_cdn/stats` gets 403."""
        args = self._args(line, 1, "stats HOST")
        if not args or not self._host(args[0]):
            return
        if self.svc is None:
            print("*** no CDN services running (cdnlab up without --no-services)")
            return
        try:
            print(json.dumps(self.svc.service_stats(args[0]), indent=1, sort_keys=True))
        except (RuntimeError, ValueError, KeyError) as e:
            print(f"*** {e}")

    def do_purge(self, line: str) -> None:
        """purge PATH [EDGE ...]: remove PATH (an object's path, e.g. /img/img0001.jpg) from every edge's
        cache, or from the edges named, with the run's management token; prints each edge's answer. The
        next request for it is a miss. A client's own `PURGE` is refused (403)."""
        args = self._args(line, 1, "purge PATH [EDGE ...]")
        if not args:
            return
        if self.svc is None:
            print("*** no CDN services running (cdnlab up without --no-services)")
            return
        path, edges = args[0], args[1:] or None
        if not path.startswith("/"):
            print(f"*** {path!r} is not a path: it starts with / (e.g. /img/img0001.jpg)")
            return
        try:
            answers = self.svc.purge([path], edges)
        except (RuntimeError, ValueError) as e:
            print(f"*** {e}")
            return
        for edge, a in answers.items():
            print(f"{edge}: {'purged' if a.get('purged') else 'not cached'} {path}")

    def do_dig(self, line: str) -> None:
        """dig CLIENT [NAME]: resolve NAME (default www.customer.example) through CLIENT's regional
        resolver and show the CNAME chain and TTLs (the answer depends on where the resolver is), or the
        response code (NXDOMAIN, SERVFAIL) or timeout when there is no answer."""
        args = self._args(line, 1, "dig CLIENT [NAME]")
        node = self._host(args[0]) if args else None
        if node is None:
            return
        name = args[1] if len(args) > 1 else CUSTOMER_NAME
        res = self.svc.resolver_for(args[0]) if self.svc else None
        server = f"@{self.cn.ip(res)}" if res else ""
        out = node.cmd(f"dig +noall +answer +comments +time=2 +tries=1 {server} {shlex.quote(name)}")
        answers = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith(";")]
        status = re.search(r"status: ([A-Z]+)", out)
        if answers:
            print("\n".join(answers))
        elif status:
            meaning = {"NXDOMAIN": "the name does not exist",
                       "SERVFAIL": "the resolver could not resolve it (is the mapping DNS up?)",
                       "REFUSED": "the server refused to answer this query",
                       "NOERROR": "the name exists but has no A record"}.get(status.group(1), "")
            print(f"no answer: {status.group(1)}{f' ({meaning})' if meaning else ''}")
        else:
            last = out.strip().splitlines()[-1] if out.strip() else "dig printed nothing"
            print(f"no answer: {last} (is {res or 'the resolver'} up?)")

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
        m = re.search(r"(\d+) packets? captured", err.decode(errors="replace"))
        print(f"{m.group(1) if m else 0} packets captured; saved {pcap}")

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
