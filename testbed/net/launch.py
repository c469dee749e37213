"""Start the CDN's real service processes inside a built network, by host role: :class:`CdnServices`
carries out the run's :class:`~testbed.net.service_plan.ServicePlan` (which host runs what, in which stage,
with which config; computed without root in :mod:`testbed.net.service_plan`), then serves the management
plane, failures and recovery.

* ``origin``: the content provider's origin server (port 80);
* ``edge``: a caching reverse proxy (port 80 on every address, so anycast VIP traffic is served too);
* ``dns``: the mapping DNS, Akamai's two levels (lecture slide 21): ``params.level`` is ``high`` (the
  customer's zones with the CNAME chain, plus the referral of ``g.cdnlab.net`` to the low-level server of
  the resolver's region, long TTL), ``low`` (A records of edges, short TTL) or ``both`` (one server doing
  both, for small topologies);
* ``resolver``: a real ``unbound`` with stub zones pointing at the high-level DNS;
* ``redirector``: answers 302 to the edge chosen for the client's own address.

Both the DNS and the redirector choose with the policy ``CdnOptions.mapping_policy``/``redirect_policy``,
by default ``NetworkMap`` over the network map built from the topology (:mod:`testbed.net.netmap`): the
nearest live edge from the resolver (DNS), the client's /24 (DNS with ECS) or the client (redirector).

Names: clients ask for ``www.customer.example`` → CNAME ``cache.customer.example.cdnlab-dns.net`` →
CNAME ``a73.g.cdnlab.net`` → A (an edge). Every generated config is written to ``<run dir>/configs``.

``CdnOptions(multicast=True)`` makes the CDN use multicast over the controller's trees
(:mod:`testbed.services.mcast.cdn`): the origin runs an ingest sender on the topology's static group whose
source is the origin (``POST /_origin/push``; updates multicast INVALIDATEs), every edge runs the
receiver in-process with its cache as the sink (NACKs by unicast to the origin) and publishes HEARTBEATs on
the control group (the topology's group whose sources are edges, else ``239.10.0.2``).
:meth:`CdnServices.start_control_listener` runs a listener on a host; :meth:`CdnServices.push` pushes.
The mapping DNS servers (levels ``low``/``both``) and the redirectors that are members of the control group
consume the heartbeats in-process (their ``control`` section, :mod:`testbed.services.mcast.consumer`):
pushed load feeds ``LoadAware`` and an edge silent for ``control_miss_limit`` intervals counts as down.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from contract.config import validate
from testbed.net.build import CdnNet
from testbed.net.service_plan import (
    CDN_NAME,
    CUSTOMER_NAME,
    HTTP_PORT,
    ICP_PORT,
    MAPPED_ZONE,
    SERVICE_MODULES,
    CdnOptions,
    PlannedService,
    ServicePlan,
    config_model,
    daemon,
    limit_fields,
    parse_limit,
    resolver_of,
    start_stages,
)
from testbed.net.spec import Role
from testbed.services import admin
from testbed.services.daemon import HttpReady
from testbed.services.mcast.control import ControlConfig
from testbed.util import StopWaiting, json_in, wait_until

#: the plan's names (testbed.net.service_plan) stay importable from here, where the CDN is started
__all__ = [
    "CDN_NAME", "CUSTOMER_NAME", "FAILURE_EFFECTS", "FAILURE_KINDS", "HTTP_PORT", "ICP_PORT", "MAPPED_ZONE",
    "SERVICE_MODULES", "CdnOptions", "CdnServices", "PlannedService", "ServicePlan", "config_model", "daemon",
    "limit_fields", "parse_limit", "resolver_of", "start_services", "start_stages",
]
FAILURE_KINDS = ("process", "host", "link")
#: what clients see when a host of each role fails (printed by the CLI's ``fail``)
FAILURE_EFFECTS = {
    "origin": "edges serve what they hold; a miss fails (502/504) unless the edge may serve it stale "
              "(stale-if-error)",
    "edge": "anycast, the mapping DNS and the redirector route around it once they notice",
    "dns": "resolvers answer from their cache until the TTLs run out; then lookups fail (SERVFAIL)",
    "resolver": "its clients' DNS lookups time out; anycast and redirect fetches still work",
    "redirector": "redirect fetches fail (connection refused or timeout); anycast and DNS still work",
    "client": "it is cut off: nothing reaches it",
    "router": "traffic through it stops",
}


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (configs and the header file hold keys)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        f.write(text)


def _py(module: str, cfg_path: Path) -> list[str]:
    return [sys.executable, "-m", module, "--config", str(cfg_path)]


class CdnServices(ServicePlan):
    """The service processes of one running CDN: its :class:`ServicePlan` carried out (configs written,
    processes started stage by stage and waited for), the management plane, failures and recovery."""

    def __init__(self, cn: CdnNet, opts: CdnOptions | None = None) -> None:
        assert cn.run_dir is not None
        super().__init__(cn.topo, cn.ip, cn.run_dir, opts, cn.mcast)
        self.cn = cn
        self.cfg_dir = cn.run_dir / "configs"
        self.admin_header_file = cn.run_dir / "admin-header"
        self._prepared = False  # the run directory's configs/, logs/ and header file (prepare())
        #: host -> the kind of failure injected on it (fail()), until recover(): what the CLI's `cdn`
        #: and the dashboard show, whoever injected it (the CLI, the page, an experiment)
        self.failed: dict[str, str] = {}

    def prepare(self) -> None:
        """Make the run directory's ``configs/`` and ``logs/`` and the management header file (once): the
        configs themselves are computed without touching the disk (``cdnlab plan`` writes them elsewhere)."""
        if self._prepared:
            return
        self.cfg_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        _write_private(self.admin_header_file, admin.header_line(self.admin_token) + "\n")
        self._prepared = True

    def _write(self, name: str, cfg: BaseModel) -> Path:
        self.prepare()
        p = self.cfg_dir / f"{name}.json"
        _write_private(p, cfg.model_dump_json(indent=1))  # it holds the run's keys
        return p

    # -- the management plane --------------------------------------------------------------------------
    def admin_curl(self) -> str:
        """curl options that authorise a control request: the run's token from its header file (mode 0600),
        so the token is on no command line."""
        self.prepare()
        return f"-H @{self.admin_header_file}"

    def control(self, via: str, url: str, method: str = "GET", body: Any = None, timeout_s: float = 5) -> Any:
        """A control request (stats, purge, update, fault, push) with the run's token, sent by curl inside
        host ``via``'s namespace; the JSON answer. Any status but 2xx (a refusal, a bad request, an unknown
        object, a conflict) or a non-JSON answer raises RuntimeError with the status and the body."""
        data = ""
        if body is not None:
            data = f"-H 'Content-Type: application/json' --data {shlex.quote(json.dumps(body))} "
        out = self.cn.host(via).cmd(
            f"curl -s -m {timeout_s:g} -X {method} {self.admin_curl()} {data}-w '\\n%{{http_code}}' {url}")
        text, _, code = out.strip().rpartition("\n")
        try:
            doc = json_in(text) if "{" in text else None
        except ValueError:
            doc = None
        if doc is None or not code.strip().isdigit() or not 200 <= int(code) < 300:
            raise RuntimeError(f"{method} {url} from {via}: HTTP {code.strip() or '?'}: {text.strip()[:300]}")
        return doc

    def service_stats(self, host: str) -> dict[str, Any]:
        """``host``'s service counters (edge, origin or redirector), asked inside ``host`` itself: management
        traffic does not cross the emulated network."""
        role = self.cn.topo.host(host).role.value
        path = {"edge": "/_cdn/stats", "origin": "/_origin/stats", "redirector": "/_redirector/stats"}.get(role)
        if path is None:
            raise ValueError(f"{host} is a {role}: only edges, the origin and redirectors have stats")
        return self.control(host, f"http://{self.cn.ip(host)}:{HTTP_PORT}{path}")

    def purge(self, paths: list[str], edges: list[str] | None = None) -> dict[str, Any]:
        """``POST /_cdn/purge`` of ``paths`` on ``edges`` (default: every edge), each asked inside its own
        host with the run's token: edge -> its answer (``purged``, ``not_found``)."""
        out: dict[str, Any] = {}
        for e in edges or self.edges:
            if e not in self.edges:
                raise ValueError(f"{e} is not an edge (edges: {', '.join(self.edges)})")
            out[e] = self.control(e, f"http://{self.cn.ip(e)}:{HTTP_PORT}/_cdn/purge", "POST", {"paths": paths})
        return out

    # -- multicast -----------------------------------------------------------------------------------
    def start_control_listener(self, host: str) -> Path:
        """Run a control-channel listener in ``host``; returns the JSON file it keeps the nodes' load in."""
        out = self.cn.run_dir / f"{host}-control-nodes.json"
        cfg = validate(ControlConfig, self.control_listener_config(host, out), f"the control listener of {host}")
        self._start(host, "testbed.services.mcast.control", cfg, "control")
        return out

    def push(self, paths: list[str] | None = None, via: str | None = None) -> dict[str, Any]:
        """``POST /_origin/push`` (``paths``, or the whole catalog) from host ``via`` (default: a client)."""
        assert self.origin
        via = via or next(h.name for h in self.cn.topo.hosts_with(Role.client))
        body = {"paths": paths} if paths is not None else {"all": True}
        return self.control(via, f"http://{self.cn.ip(self.origin)}:{HTTP_PORT}/_origin/push", "POST", body, 30)

    # -- start / readiness ---------------------------------------------------------------------------
    def _http_ready(self, host: str, ip: str, path: str) -> bool:
        """One HTTP check from ``host``; curl gets three round trips of the configured path (at least 1 s)."""
        dst = next((h.name for h in self.cn.topo.hosts if self.cn.ip(h.name) == ip), None)
        rtt_s = 2 * self.cn.topo.path_delay_ms(host, dst) / 1000 if dst else 0.0
        out = self.cn.host(host).cmd(
            f"curl -s -o /dev/null -m {max(1, math.ceil(3 * rtt_s))} -w '%{{http_code}}' http://{ip}:{HTTP_PORT}{path}")
        return out.strip().endswith(("200", "302"))

    def _dns_ready(self, client: str, server_ip: str, name: str) -> bool:
        out = self.cn.host(client).cmd(f"dig +short +time=1 +tries=1 @{server_ip} {name} A")
        return bool(out.strip()) and "timed out" not in out and "no servers" not in out

    def _start(self, host: str, module: str, cfg: BaseModel, role: str) -> None:
        p = self._write(f"{host}-{role}", cfg)
        self.cn.popen(host, _py(module, p), role, log_name=f"logs/{host}-{role}.out")

    def _probe_host(self) -> str:
        return next((h.name for h in self.cn.topo.hosts_with(Role.client)), self.cn.topo.hosts[0].name)

    def _launch(self, host: str) -> None:
        """Start ``host``'s service process (its role's module and config)."""
        role = self.cn.topo.host(host).role.value
        self._start(host, daemon(role).module, self.config(host), role)

    def _alive(self, host: str, role: str) -> None:
        """Raise StopWaiting, with its log's tail, if ``host``'s service process has exited."""
        p = self.cn.procs.get(f"{host}:{role}")
        if p is None or p.poll() is None:
            return
        log = self.cn.run_dir / "logs" / f"{host}-{role}.out" if self.cn.run_dir else None
        try:
            tail = log.read_text(errors="replace")[-1500:].strip() if log else ""
        except OSError:
            tail = ""
        raise StopWaiting(f"{role} {host} exited (status {p.returncode}) before answering; "
                          f"its log ({log}) ends:\n{tail or '(empty)'}")

    def _wait_ready(self, host: str, what: str = "") -> None:
        """Wait until ``host``'s service answers as its role should (``what`` names the wait in errors); if
        the process exits first, fail at once with its log's tail."""
        role, ip, probe, t = self.cn.topo.host(host).role.value, self.cn.ip(host), self._probe_host(), \
            self.opts.ready_timeout

        def answering(check: Callable[[], bool]) -> Callable[[], bool]:
            def alive_and_answering() -> bool:
                self._alive(host, role)
                return check()

            return alive_and_answering

        ready = daemon(role).ready
        if isinstance(ready, HttpReady):
            wait_until(answering(lambda: self._http_ready(probe, ip, ready.path)), t, 0.1,
                       what=what or f"{role} {host} answering")
        elif ready.name == "cdn":
            # the high-level server answers its own zone; the referral for g.cdnlab.net has no answer
            q = "ns1.cdnlab.net" if self.dns.get(host) == "high" and self._low_servers() else CDN_NAME
            wait_until(answering(lambda: self._dns_ready(probe, ip, q)), t, 0.1,
                       what=what or f"DNS {host} answering {q}")
        else:
            wait_until(answering(lambda: self._dns_ready(probe, ip, CUSTOMER_NAME)), t, 0.2,
                       what=what or f"{role} {host} resolving {CUSTOMER_NAME}")

    def start(self) -> CdnServices:
        """Carry out the plan (:meth:`ServicePlan.services`) stage by stage: every service of a stage is
        started with its planned config, then each is waited for (failing at once, with its log's tail, if
        its process exits)."""
        self.prepare()
        planned = self.services()
        for stage in sorted({s.stage for s in planned}):
            batch = [s for s in planned if s.stage == stage]
            for s in batch:
                self._start(s.host, s.module, s.config, s.role)
            for s in batch:
                self._wait_ready(s.host)
        return self

    # -- failures: every role (used by experiments and the CLI) -------------------------------------
    def resolver_for(self, client: str) -> str | None:
        """The client's resolver (see :func:`resolver_of`)."""
        return resolver_of(self.cn.topo, client)

    def steering_args(self, client: str, via: str) -> list[str] | None:
        """The options that send a measuring tool (``testbed.measure.player``, ``probe``) on ``client``
        through selection method ``via``: the anycast VIP, the client's resolver, or the redirector.
        None when this CDN has no such service."""
        if via == "anycast" and self.cn.topo.anycast:
            return ["--vip", self.cn.topo.anycast[0].vip]
        if via == "redirect" and self.redirectors:
            return ["--redirector", self.cn.ip(self.redirectors[0])]
        if via == "dns" and (res := self.resolver_for(client)):
            return ["--resolver", self.cn.ip(res)]
        return None

    def service_process(self, host: str) -> subprocess.Popen | None:
        """The running service process of ``host`` (None: none started, or it has exited)."""
        role = self.cn.topo.host(host).role.value
        p = self.cn.procs.get(f"{host}:{role}")
        return p if p is not None and p.poll() is None else None

    def kill_service(self, host: str) -> None:
        """Crash ``host``'s service: SIGKILL to its whole process group (the resolver's unbound with it)."""
        p = self.service_process(host)
        if p is None:
            return
        try:
            if os.getpgid(p.pid) == p.pid:  # mnexec -d made it a session (and group) leader
                os.killpg(p.pid, signal.SIGKILL)
            else:
                p.kill()
        except ProcessLookupError:
            pass
        p.wait(5)

    def fail(self, host: str, kind: str = "process") -> str:
        """Make ``host`` fail and return what clients should now see. ``kind``:

        * ``process``: its service crashes (SIGKILL); refused for hosts without one (clients, routers);
        * ``host``: it goes silent: its service crashes and every packet to it is dropped (no RST);
        * ``link``: its access link goes down.

        ValueError names the roles and kinds when the request makes no sense.
        """
        role = self.cn.topo.host(host).role.value  # KeyError: unknown host
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}: {', '.join(FAILURE_KINDS)}")
        if kind == "process" and role not in SERVICE_MODULES:
            raise ValueError(f"{host} is a {role} and runs no CDN service process; fail it with 'host' "
                             f"(silent) or 'link' (access link down). 'process' works on: "
                             f"{', '.join(SERVICE_MODULES)}")
        self.failed[host] = kind  # first: a watcher (the dashboard) never sees the host down but not failed
        try:
            if kind in ("process", "host"):
                self.kill_service(host)
            if kind == "host":
                self.cn.host(host).cmd("iptables -A INPUT -j DROP")
            elif kind == "link":
                self.cn.net.configLinkStatus(host, self.cn.topo.host(host).switch, "down")
        except BaseException:
            self.failed.pop(host, None)
            raise
        return FAILURE_EFFECTS[role]

    def recover(self, host: str, kind: str = "process") -> None:
        """Undo :meth:`fail` and, for a host with a service, restart it and wait until it answers."""
        role = self.cn.topo.host(host).role.value
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}: {', '.join(FAILURE_KINDS)}")
        if kind == "link":
            self.cn.net.configLinkStatus(host, self.cn.topo.host(host).switch, "up")
        if kind == "host":
            self.cn.host(host).cmd("iptables -D INPUT -j DROP")
        if role in SERVICE_MODULES and (kind in ("process", "host") or self.service_process(host) is None):
            self.restart(host)
        self.failed.pop(host, None)

    def restart(self, host: str) -> None:
        """Stop ``host``'s service if it runs, start it again from its config, wait until it answers."""
        self.kill_service(host)
        self._launch(host)
        self._wait_ready(host, f"{self.cn.topo.host(host).role.value} {host} answering again")

    # the edge-only names the failover experiment uses
    def kill_edge_process(self, edge: str) -> None:
        self.kill_service(edge)

    def fail_edge(self, edge: str, kind: str = "process") -> None:
        """Make an edge fail: ``process`` (killed: the kernel answers RST), ``host`` (silent: its
        packets are dropped, no RST, its link stays up) or ``link`` (its access link goes down)."""
        self.fail(edge, kind)

    def recover_edge(self, edge: str, kind: str = "process") -> None:
        """Undo :meth:`fail_edge` and wait until the edge answers again."""
        self.recover(edge, kind)

    def restart_edge(self, edge: str) -> None:
        self.restart(edge)


def start_services(cn: CdnNet, opts: CdnOptions | None = None) -> CdnServices:
    """Start every service the topology's roles call for; returns the handle (also kept on ``cn``)."""
    svc = CdnServices(cn, opts).start()
    cn.services = svc
    return svc
