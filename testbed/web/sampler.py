"""Samples a running CDN for the dashboard, without disturbing it.

* Each edge's counters (``GET /_cdn/stats`` with the run's management token) and each client's view
  (its resolver's answer for the customer's name; the redirector's ``Location`` for it) are asked from a
  socket made **inside** the host's network namespace (:mod:`testbed.net.nsclient`): no packet goes from
  the machine's root namespace to an emulated address, and no Mininet shell is used, so the CLI or an
  experiment can use the hosts' shells at the same time.
* The controller's view (anycast members, health, load from heartbeats, catchments) comes from its REST
  API on the root namespace's loopback.
* A link is down when the switch side of it is administratively down (``/sys/class/net/<intf>/flags``,
  IFF_UP): what ``link ... down``, ``fail HOST link`` and the page's own action do.

Probes run in parallel with short timeouts, so a silent host costs one timeout, not one per probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import dns.exception
import dns.rcode
import dns.rdatatype

from contract.dashboard import ClientState, EdgeState, StateMsg
from testbed.net import nsclient
from testbed.net.launch import CUSTOMER_NAME, HTTP_PORT
from testbed.net.spec import Role
from testbed.web import view

#: the path asked of the redirector (any path: the answer names the edge for this client)
REDIRECT_PATH = "/"


def _intf_up(name: str) -> bool | None:
    try:
        return bool(int(open(f"/sys/class/net/{name}/flags").read(), 16) & 0x1)  # IFF_UP
    except (OSError, ValueError):
        return None


class Sampler:
    """One running network's state, sampled on demand (:meth:`sample`), thread-safe for one caller."""

    def __init__(self, cn: Any, probe_every: int = 2, timeout_s: float = 0.8) -> None:
        self.cn = cn
        self.topo = cn.topo
        self.probe_every = max(1, probe_every)
        self.timeout_s = timeout_s
        self.edges = [h.name for h in self.topo.hosts_with(Role.edge)]
        self.clients = [h for h in self.topo.hosts_with(Role.client)]
        self.edge_ips = {e: cn.ip(e) for e in self.edges}
        self.seq = 0
        self.prev: StateMsg | None = None
        self._prev_t = time.monotonic()
        self._client_answers: dict[str, dict[str, tuple[str | None, str | None]]] = {}
        self._client_ttl: dict[str, int | None] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dashboard-probe")
        self._switch_intfs = self._link_intfs()
        self.methods = view.topology_msg(self.topo, {}).methods

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- where things are -------------------------------------------------------------------------------
    def _link_intfs(self) -> dict[str, list[str]]:
        """link id -> the names of its ends that live on switches (root namespace)."""
        out: dict[str, list[str]] = {}
        net = self.cn.net
        switches = {s.name for s in self.topo.switches}
        pairs = [(ln.a, ln.b) for ln in self.topo.links] + [(h.name, h.switch) for h in self.topo.hosts]
        for a, b in pairs:
            names = []
            for link in net.linksBetween(net.get(a), net.get(b)):
                for intf in (link.intf1, link.intf2):
                    if intf.node.name in switches:
                        names.append(intf.name)
            out[view.link_id(a, b)] = names
        return out

    def _pid(self, host: str) -> int:
        return int(self.cn.host(host).pid)

    # -- probes ---------------------------------------------------------------------------------------
    def _edge_stats(self, edge: str) -> dict[str, Any] | None:
        svc = getattr(self.cn, "services", None)
        if svc is None:
            return None
        try:
            return nsclient.http_json(
                self._pid(edge),
                self.edge_ips[edge],
                HTTP_PORT,
                "/_cdn/stats",
                headers={"Authorization": f"Bearer {svc.admin_token}"},
                timeout=self.timeout_s,
            )
        except (OSError, ValueError):
            return None

    def _dns_answer(self, client: str) -> tuple[tuple[str | None, str | None], int | None]:
        svc = getattr(self.cn, "services", None)
        res = svc.resolver_for(client) if svc is not None else None
        if res is None:
            return (None, "no resolver"), None
        try:
            msg = nsclient.dns_query(
                self._pid(client), self.cn.ip(res), CUSTOMER_NAME, "A", timeout=self.timeout_s
            )
        except (OSError, ValueError, dns.exception.DNSException) as e:  # Timeout is dnspython's own
            return (None, f"resolver {res}: {type(e).__name__}"), None
        a = [rr for rr in msg.answer if rr.rdtype == dns.rdatatype.A]
        if not a:
            return (None, f"resolver {res}: {dns.rcode.to_text(msg.rcode())}, no address"), None
        ip = a[-1][0].address
        ttl = min(rr.ttl for rr in msg.answer)
        edge = view.edge_of(ip, self.edge_ips)
        return (edge, None if edge else f"{ip} is no edge"), ttl

    def _redirect_answer(self, client: str) -> tuple[str | None, str | None]:
        svc = getattr(self.cn, "services", None)
        if svc is None or not svc.redirectors:
            return None, "no redirector"
        r = svc.redirectors[0]
        try:
            ans = nsclient.http_request(
                self._pid(client), self.cn.ip(r), HTTP_PORT, REDIRECT_PATH, timeout=self.timeout_s
            )
        except OSError as e:
            return None, f"redirector {r}: {type(e).__name__}"
        loc = ans.headers.get("location")
        if ans.status // 100 != 3 or not loc:
            return None, f"redirector {r}: HTTP {ans.status}"
        host = urlsplit(loc).hostname
        edge = view.edge_of(host, self.edge_ips)
        return edge, None if edge else f"redirected to {host}, no edge"

    def _anycast(self) -> dict[str, Any]:
        if getattr(self.cn, "controller_mode", None) != "ryu":
            return {}
        try:
            return self.cn.rest("/anycast") or {}
        except (OSError, ValueError):
            return {}

    # -- one sample ------------------------------------------------------------------------------------
    def sample(self, failed: dict[str, str] | None = None, experiment: Any = None) -> StateMsg:
        """The network's state now; ``failed``: host -> the kind of failure injected on it."""
        failed = failed or {}
        now = time.monotonic()
        dt, self._prev_t = now - self._prev_t, now
        probe_clients = self.seq % self.probe_every == 0
        jobs: dict[str, Callable[[], Any]] = {
            f"stats:{e}": (lambda e=e: self._edge_stats(e)) for e in self.edges if e not in failed
        }
        jobs["anycast"] = self._anycast
        if probe_clients:
            methods = set(self.methods)
            for c in self.clients:
                if c.name in failed:
                    continue
                if "dns" in methods:
                    jobs[f"dns:{c.name}"] = lambda c=c.name: self._dns_answer(c)
                if "redirect" in methods:
                    jobs[f"redirect:{c.name}"] = lambda c=c.name: self._redirect_answer(c)
        futures = {k: self._pool.submit(fn) for k, fn in jobs.items()}
        results: dict[str, Any] = {}
        for k, f in futures.items():
            try:
                results[k] = f.result(timeout=self.timeout_s + 2)
            except Exception:  # a probe that failed or hung: that sample is unknown
                results[k] = None
        anycast = results.get("anycast") or {}
        catch = view.catchments(anycast)
        mem = view.members(anycast)
        prev_edges = {e.name: e for e in self.prev.edges} if self.prev else {}
        edges: list[EdgeState] = []
        for e in self.edges:
            edges.append(
                view.edge_state(
                    e,
                    results.get(f"stats:{e}"),
                    mem.get(e),
                    failed.get(e),
                    [sw for sw, m in catch.items() if m == e],
                    prev_edges.get(e),
                    dt,
                )
            )
        clients: list[ClientState] = []
        for c in self.clients:
            answers = self._client_answers.setdefault(c.name, {})
            if self.topo.anycast:
                answers["anycast"] = (catch.get(c.switch), None if catch.get(c.switch) else "no route known")
            if f"dns:{c.name}" in results:
                got = results[f"dns:{c.name}"]
                answers["dns"], self._client_ttl[c.name] = got if got else ((None, "probe failed"), None)
            if f"redirect:{c.name}" in results:
                answers["redirect"] = results[f"redirect:{c.name}"] or (None, "probe failed")
            if c.name in failed:
                answers = {m: (None, f"client {failed[c.name]} failed") for m in answers}
            clients.append(view.client_state(c.name, c.region, answers, self._client_ttl.get(c.name)))
        down = [lid for lid, intfs in self._switch_intfs.items() if any(_intf_up(i) is False for i in intfs)]
        msg = StateMsg(
            seq=self.seq,
            time=time.time(),
            links_down=down,
            edges=edges,
            clients=clients,
            experiment=experiment,
        )
        self.seq += 1
        self.prev = msg
        return msg
