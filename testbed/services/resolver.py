"""A real recursive resolver for the testbed: NLnet Labs ``unbound`` (Debian's /usr/sbin/unbound) as a process.

The testbed has no root servers, so the resolver is told where the CDN's zones live with ``stub-zone``
clauses (the role the root and TLD servers play on slide 22): the customer zone, ``cdnlab-dns.net`` and
``cdnlab.net`` point at the high-level server; ``g.cdnlab.net`` is then learned from its referral (NS + glue)
exactly as in the Akamai walk-through. Caching is on (that is the point of short vs long TTLs).

EDNS Client Subnet (RFC 7871) is turned on per config: unbound's ``subnetcache`` module (present in Debian's
1.17 build, ``--enable-subnet``) sends the client's /``max_client_subnet_ipv4`` prefix to the authorities
listed in ``send-client-subnet`` (addresses) and ``client-subnet-zone`` (names), and caches answers per
scope. ``do-not-query-localhost: no`` lets it talk to servers on 127.0.0.0/8 (loopback tests).

QNAME minimisation (RFC 9156) is off by default: our authorities are the only servers on the path and
minimised queries (``g.cdnlab.net NS``) would just add round trips and muddle per-name query counts in
experiments; set ``qname_minimisation: true`` to study it.

``Resolver(cfg).start() / wait_ready() / stop()`` from Python; ``python -m testbed.services.resolver --config
F`` runs it in the foreground (e.g. inside a Mininet host), SIGTERM stops unbound and exits 0.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
from pydantic import Field, field_validator

from testbed.services.base import ServiceConfig, service_main
from testbed.services.daemon import Daemon, DnsReady
from testbed.util import wait_until

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


class ResolverConfig(ServiceConfig):
    """Config of ``python -m testbed.services.resolver``."""

    host: str = "127.0.0.1"
    port: int = Field(53, ge=1, le=65535)
    run_dir: Path  # unbound.conf, pid file, unbound.log go here
    unbound: str = "/usr/sbin/unbound"
    stub_zones: dict[str, list[str]] = Field(default_factory=dict)  # zone -> ["127.0.0.1@5353", ...]
    forward_zones: dict[str, list[str]] = Field(default_factory=dict)
    access_control: list[str] = Field(default_factory=lambda: ["127.0.0.0/8 allow", "10.0.0.0/8 allow"])
    outgoing_interface: str | None = None  # source address towards authorities (e.g. to sit in a region)
    cache: bool = True  # False: cache-max-ttl 0 (every query goes upstream)
    ecs: bool = False  # RFC 7871 client subnet towards the CDN
    ecs_servers: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"])  # send-client-subnet
    ecs_zones: list[str] = Field(default_factory=list)  # client-subnet-zone
    ecs_always_forward: bool = True  # client-subnet-always-forward
    max_client_subnet_ipv4: int = Field(24, ge=0, le=32)
    qname_minimisation: bool = False
    verbosity: int = Field(1, ge=0, le=5)
    log_queries: bool = False
    extra_server_lines: list[str] = Field(default_factory=list)  # raw "name: value" lines for server:

    @field_validator("stub_zones", "forward_zones")
    @classmethod
    def _addrs(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for zone, addrs in v.items():
            if not addrs:
                raise ValueError(f"{zone}: needs at least one address")
            for a in addrs:
                host, _, port = a.partition("@")
                if not host or (port and not port.isdigit()):
                    raise ValueError(f"{zone}: {a!r} is not ADDRESS or ADDRESS@PORT")
        return v


def render_unbound_conf(cfg: ResolverConfig) -> str:
    """The unbound.conf text for ``cfg`` (everything under ``run_dir``, foreground, no chroot, no setuid)."""
    rd = cfg.run_dir.resolve()
    q = '"{}"'.format
    s = [
        "server:",
        f"  interface: {cfg.host}@{cfg.port}",
        f"  port: {cfg.port}",
        "  do-daemonize: no",
        '  chroot: ""',
        '  username: ""',
        f"  directory: {q(rd)}",
        f"  pidfile: {q(rd / 'unbound.pid')}",
        f"  logfile: {q(rd / 'unbound.log')}",
        "  use-syslog: no",
        "  log-time-ascii: yes",
        f"  verbosity: {cfg.verbosity}",
        f"  log-queries: {'yes' if cfg.log_queries else 'no'}",
        "  num-threads: 1",
        "  so-reuseport: no",
        "  do-ip4: yes",
        "  do-ip6: no",
        "  do-udp: yes",
        "  do-tcp: yes",
        "  do-not-query-localhost: no",
        f"  qname-minimisation: {'yes' if cfg.qname_minimisation else 'no'}",
        "  harden-referral-path: no",
        "  minimal-responses: no",
        "  hide-identity: yes",
        "  hide-version: yes",
        # no trust anchor: the testbed zones are unsigned. Names outside the stub/forward zones are refused
        # locally, so unbound never tries its built-in root hints (no traffic leaves the testbed).
        '  local-zone: "." refuse',
    ]
    for ac in cfg.access_control:
        s.append(f"  access-control: {ac}")
    if cfg.outgoing_interface:
        s.append(f"  outgoing-interface: {cfg.outgoing_interface}")
    if not cfg.cache:
        s += ["  cache-max-ttl: 0", "  cache-max-negative-ttl: 0"]
    if cfg.ecs:
        s.append('  module-config: "subnetcache iterator"')
        for a in cfg.ecs_servers:
            s.append(f"  send-client-subnet: {a}")
        for z in cfg.ecs_zones:
            s.append(f"  client-subnet-zone: {z}")
        s.append(f"  client-subnet-always-forward: {'yes' if cfg.ecs_always_forward else 'no'}")
        s.append(f"  max-client-subnet-ipv4: {cfg.max_client_subnet_ipv4}")
    else:
        s.append('  module-config: "iterator"')
    for zone in {**cfg.stub_zones, **cfg.forward_zones}:
        s.append(f"  domain-insecure: {q(zone)}")
        s.append(f"  local-zone: {q(zone)} transparent")
    s += [f"  {line}" for line in cfg.extra_server_lines]
    s.append("")
    for zone, addrs in cfg.stub_zones.items():
        s += ["stub-zone:", f"  name: {q(zone)}"] + [f"  stub-addr: {a}" for a in addrs] + [""]
    for zone, addrs in cfg.forward_zones.items():
        s += ["forward-zone:", f"  name: {q(zone)}"] + [f"  forward-addr: {a}" for a in addrs] + [""]
    s += ["remote-control:", "  control-enable: no", ""]
    return "\n".join(s)


class ResolverError(RuntimeError):
    """unbound refused its config or did not come up; the message includes its own words."""


class Resolver:
    """One unbound process: ``start()`` writes the config and launches it, ``wait_ready()``, ``stop()``."""

    def __init__(self, cfg: ResolverConfig) -> None:
        self.cfg = cfg
        self.run_dir = cfg.run_dir
        self.conf_path = self.run_dir / "unbound.conf"
        self.log_path = self.run_dir / "unbound.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        if not shutil.which(self.cfg.unbound) and not os.access(self.cfg.unbound, os.X_OK):
            raise ResolverError(f"unbound not found at {self.cfg.unbound} (apt-get install unbound)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(render_unbound_conf(self.cfg))
        checker = Path(self.cfg.unbound).with_name("unbound-checkconf")
        if checker.exists():
            chk = subprocess.run(
                [str(checker), str(self.conf_path)], capture_output=True, text=True, timeout=30
            )
            if chk.returncode != 0:
                raise ResolverError(f"{self.conf_path}: {(chk.stderr or chk.stdout).strip()}")
        self._stderr = open(self.run_dir / "unbound.stderr", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [self.cfg.unbound, "-d", "-c", str(self.conf_path)],
            stdout=self._stderr,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only; we start it before any thread
        )
        log.info("unbound pid %d on %s@%d (%s)", self.proc.pid, self.cfg.host, self.cfg.port, self.conf_path)

    def answers(self) -> bool:
        """True when unbound answers a query for its own built-in name (no upstream needed)."""
        q = dns.message.make_query("localhost.", "A")
        try:
            r = dns.query.udp(q, self.cfg.host, port=self.cfg.port, timeout=0.3)
        except (OSError, dns.exception.DNSException):
            return False
        return r is not None

    def wait_ready(self, timeout: float = 10.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise ResolverError(f"unbound exited with {self.proc.returncode}: {self._tail()}")
            return self.answers()

        try:
            wait_until(ready, timeout, interval=0.05, what=f"unbound on {self.cfg.host}@{self.cfg.port}")
        except ResolverError:
            raise
        except TimeoutError as e:
            raise ResolverError(f"{e}; log: {self._tail()}") from None

    def _tail(self) -> str:
        text = ""
        for p in (self.run_dir / "unbound.stderr", self.log_path):
            if p.exists():
                text += p.read_text(errors="replace")[-800:]
        return text.strip()

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process we started (then SIGKILL after ``timeout``); returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        self._stderr.close()
        return rc

    def __enter__(self) -> Resolver:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the process that started unbound dies, however it dies
    (a crash, ``cdnlab clean``, ``fail``), so no unbound outlives its service (prctl(2) PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


async def serve(cfg: ResolverConfig, stop: asyncio.Event) -> None:
    """Run unbound in the foreground until SIGTERM."""
    r = Resolver(cfg)
    r.start()
    try:
        await asyncio.to_thread(r.wait_ready)
        log.info("unbound ready")
        while not stop.is_set():
            if r.proc is not None and r.proc.poll() is not None:
                raise OSError(f"unbound exited unexpectedly ({r.proc.returncode}): {r._tail()}")
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
    finally:
        t0 = time.monotonic()
        rc = r.stop()
        log.info("unbound stopped (status %s) in %.2fs", rc, time.monotonic() - t0)


#: this service to the launcher (:mod:`testbed.services.daemon`):
#: a resolver's first answers need the DNS servers it asks
DAEMON = Daemon(
    role="resolver",
    module="testbed.services.resolver",
    config=ResolverConfig,
    ready=DnsReady("customer"),
    after=("dns",),
)


def main(argv: list[str] | None = None) -> int:
    try:
        return service_main(ResolverConfig, serve, argv, prog="testbed.services.resolver")
    except ResolverError as e:
        print(f"testbed.services.resolver: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
