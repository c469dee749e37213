"""``python -m testbed.services.mcast.receiver_service --config F``: the multicast ingest receiver as a
service of its own (:class:`ReceiverConfig`): joins the group, runs the engine
(:class:`~testbed.services.mcast.receiver.IngestReceiver`) on the socket driver, stores what it delivers in
a directory or forwards it to an edge over HTTP, and serves ``GET /stats`` and a stats file."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from testbed.services.base import ServiceConfig, service_main
from testbed.services.mcast.receiver import ReceiverSettings
from testbed.services.mcast.sinks import DirectorySink, HttpForwardSink, ObjectSink
from testbed.services.mcast.sockets import EndpointRunner, GroupConfig

log = logging.getLogger(__name__)


class ReceiverConfig(ServiceConfig, ReceiverSettings):
    """Config of ``python -m testbed.services.mcast.receiver_service`` (session, key and repair settings:
    :class:`ReceiverSettings`', as the edge's ``ingest`` section)."""

    name: str = "mcast-receiver"
    group: GroupConfig = GroupConfig()
    sink: Literal["dir", "http"] = "dir"
    store_dir: Path = Path("/tmp/cdnlab-mcast-store")
    edge_url: str = "http://127.0.0.1:8080"
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(None, ge=1, le=65535)  # GET /stats
    stats_file: Path | None = None  # JSON stats written every second and at exit


async def serve(cfg: ReceiverConfig, stop: asyncio.Event) -> None:
    """Multicast ingest receiver: join the group, reassemble and verify objects, store them in the sink."""
    runner = EndpointRunner(cfg.group)
    sink: ObjectSink = DirectorySink(cfg.store_dir) if cfg.sink == "dir" else HttpForwardSink(cfg.edge_url)
    rx = cfg.receiver(runner.transmit, sink)
    log.info(
        "receiver %08x joined %s:%d on %s",
        rx.receiver_id,
        cfg.group.group,
        cfg.group.port,
        cfg.group.iface_addr,
    )
    api = None
    if cfg.http_port:
        from aiohttp import web

        async def stats(_req: web.Request) -> web.Response:
            return web.json_response(
                {"receiver_id": rx.receiver_id, "pending": rx.pending(), **rx.stats.as_dict()}
            )

        app = web.Application()
        app.add_routes([web.get("/stats", stats)])
        api = web.AppRunner(app, access_log=None)
        await api.setup()
        await web.TCPSite(api, cfg.http_host, cfg.http_port).start()

    def dump() -> None:
        if cfg.stats_file:
            tmp = cfg.stats_file.with_suffix(".tmp")
            tmp.write_text(
                json.dumps({"receiver_id": rx.receiver_id, "pending": rx.pending(), **rx.stats.as_dict()})
            )
            tmp.replace(cfg.stats_file)

    async def dumper() -> None:
        """Write the stats file soon after anything is delivered or applied, and at least once a second."""
        last_key, last_t = None, 0.0
        while not stop.is_set():
            s = rx.stats
            key = (s.delivered, s.invalidations_applied, s.rejected, s.abandoned, s.replayed)
            if key != last_key or time.monotonic() - last_t > 1.0:
                dump()
                last_key, last_t = key, time.monotonic()
            try:
                await asyncio.wait_for(stop.wait(), 0.02)
            except TimeoutError:
                pass

    try:
        await asyncio.gather(runner.run(rx, stop), dumper())
    finally:
        dump()
        if api:
            await api.cleanup()


def main(argv: list[str] | None = None) -> int:
    return service_main(ReceiverConfig, serve, argv, prog="testbed.services.mcast.receiver_service")


if __name__ == "__main__":
    sys.exit(main())
