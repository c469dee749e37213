"""Where the multicast ingest receiver puts complete, verified objects: the :class:`ObjectSink` protocol and
three sinks (in memory, a directory, an edge over HTTP). The edge's own sink is its cache
(:class:`testbed.services.mcast.cdn.EdgeIngest`)."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)


@runtime_checkable
class ObjectSink(Protocol):
    """Where complete, verified objects go (the edge cache). ``purge`` returns whether it held ``path``.

    A sink may also offer ``purge_prefix(prefix: str) -> int``; without it a prefix invalidation purges
    the paths this receiver itself delivered under that prefix.
    """

    def admit(self, path: str, status: int, headers: Mapping[str, str], body: bytes) -> None: ...

    def purge(self, path: str) -> bool: ...


class MemorySink:
    """An in-memory :class:`ObjectSink` (tests, simulations)."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.admits = 0
        self.purges: list[str] = []

    def admit(self, path: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.objects[path] = (status, dict(headers), body)
        self.admits += 1

    def purge(self, path: str) -> bool:
        self.purges.append(path)
        return self.objects.pop(path, None) is not None


class DirectorySink:
    """Stores each object under ``root`` (path -> file, plus ``.meta.json`` with status and headers)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _file(self, path: str) -> Path:
        rel = urllib.parse.quote(path.lstrip("/"), safe="") or "%2F"
        return self.root / rel

    def admit(self, path: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        f = self._file(path)
        f.write_bytes(body)
        f.with_name(f.name + ".meta.json").write_text(
            json.dumps({"path": path, "status": status, "headers": dict(headers)})
        )

    def purge(self, path: str) -> bool:
        f = self._file(path)
        f.with_name(f.name + ".meta.json").unlink(missing_ok=True)
        try:
            f.unlink()
            return True
        except FileNotFoundError:
            return False


class HttpForwardSink:
    """Forwards to an edge cache over HTTP: ``PUT {edge_url}{path}`` (X-Mcast-Status + headers) to admit,
    ``DELETE {edge_url}{path}`` to purge. Runs requests in the background of the running asyncio loop."""

    def __init__(self, edge_url: str) -> None:
        self.edge_url = edge_url.rstrip("/")
        self._tasks: set[asyncio.Task] = set()

    def _spawn(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _req(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> int:
        import aiohttp

        try:
            async with (
                aiohttp.ClientSession() as s,
                s.request(
                    method,
                    self.edge_url + path,
                    headers=headers,
                    data=body,
                    timeout=aiohttp.ClientTimeout(total=5),
                ) as r,
            ):
                return r.status
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("%s %s failed: %s", method, path, e)
            return 0

    def admit(self, path: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self._spawn(self._req("PUT", path, {**headers, "X-Mcast-Status": str(status)}, body))

    def purge(self, path: str) -> bool:
        self._spawn(self._req("DELETE", path, {}, None))
        return True
