"""The DNS service process: ``serve`` and ``main`` (``python -m testbed.services.dns``)."""

from __future__ import annotations

import asyncio
import logging

from testbed.services.base import service_main
from testbed.services.daemon import Daemon, DnsReady
from testbed.services.dns.config import (
    DnsConfig,
)
from testbed.services.dns.transport import DnsServer

log = logging.getLogger("testbed.services.dns")


async def serve(cfg: DnsConfig, stop: asyncio.Event) -> None:
    """Mapping DNS server (static zones, high-level referrals, low-level edge answers)."""
    server = DnsServer(cfg)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
        log.info("stats: %s", dict(server.stats))


#: this service to the launcher (:mod:`testbed.services.daemon`):
#: the mapping DNS health-checks the edges it maps to
DAEMON = Daemon(
    role="dns",
    module="testbed.services.dns",
    config=DnsConfig,
    ready=DnsReady("cdn"),
    after=("origin", "edge"),
)


def main(argv: list[str] | None = None) -> int:
    return service_main(DnsConfig, serve, argv, prog="testbed.services.dns")


if __name__ == "__main__":
    raise SystemExit(main())
