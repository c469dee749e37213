"""A fake dashboard server for page tests: the real page (``testbed/web/static``) against scripted messages.

It speaks the wire format of :mod:`contract.dashboard` as the real server does:

* ``GET /`` is ``index.html`` with ``{{TOKEN}}`` and ``{{TITLE}}`` filled in (HTML-escaped);
* ``GET /static/...`` serves the page's files;
* ``GET /api/events`` is a server-sent-events stream of what the test :meth:`FakeDashboard.send`\\ s; a page
  that connects (or reconnects) first gets everything sent so far, then each new message as it is sent;
* ``POST /api/action`` answers 403 without the ``X-Cdnlab-Token`` header, 400 for a body that is not a
  valid :class:`contract.dashboard.Action`, else an :class:`~contract.dashboard.ActionResult` (or the
  reply scripted with :meth:`FakeDashboard.reply_next`), and records every post.

The server runs on 127.0.0.1 on a free port, in a background thread with its own asyncio loop::

    with FakeDashboard(token="t") as fake:
        fake.send("topology", topology_msg)
        driver.get(fake.url)
"""

from __future__ import annotations

import asyncio
import html
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from contract.dashboard import Action, ActionResult, sse

STATIC_DIR = Path(__file__).resolve().parents[2] / "testbed" / "web" / "static"
TOKEN_HEADER = "X-Cdnlab-Token"


@dataclass(frozen=True)
class Posted:
    """One ``POST /api/action``: the JSON body (None when it was not JSON), the token header, the HTTP
    status of the answer, and whether it carried the right token and a valid :class:`Action`."""

    body: Any
    token: str | None
    status: int
    valid: bool


class FakeDashboard:
    """The fake server (see the module's doc). Thread-safe: the test's thread calls :meth:`send`,
    :meth:`reply_next` and :meth:`wait_actions` while the server's loop runs in its own thread."""

    def __init__(
        self, *, token: str = "test-token", title: str = "cdnlab test", static_dir: Path = STATIC_DIR
    ) -> None:
        self.token = token
        self.title = title
        self.static_dir = Path(static_dir)
        self.port: int | None = None
        #: seconds every action waits before it is answered (to see a button disabled while in flight)
        self.action_delay = 0.0
        self.posts: list[Posted] = []
        self._history: list[bytes] = []
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._replies: deque[tuple[int, dict[str, Any]]] = deque()
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the test's side

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def actions(self) -> list[Posted]:
        """The posts that carried the token and a valid action (whatever was scripted as their reply)."""
        with self._cond:
            return [p for p in self.posts if p.valid]

    @property
    def subscribers(self) -> int:
        """How many event streams are open now."""
        return len(self._subscribers)

    def send(self, event: str, model: BaseModel) -> None:
        """Stream one event to every page connected now and to every page that connects later; returns
        once it is handed to the open streams."""
        self.send_raw(sse(event, model))

    def send_raw(self, chunk: bytes) -> None:
        """Stream bytes as they are (for a malformed message)."""
        if self._loop is None:
            raise RuntimeError("the fake dashboard is not running")
        asyncio.run_coroutine_threadsafe(self._publish(chunk), self._loop).result(timeout=5)

    def reply_next(self, status: int, body: dict[str, Any]) -> None:
        """Answer the next valid action with this status and JSON body instead of a success."""
        with self._cond:
            self._replies.append((status, body))

    def wait_actions(self, count: int, timeout: float) -> list[Posted]:
        """The accepted actions once there are at least ``count``; ``TimeoutError`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                actions = [p for p in self.posts if p.valid]
                if len(actions) >= count:
                    return actions
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(actions)} action(s) posted within {timeout} s, wanted {count}")
                self._cond.wait(left)

    # ------------------------------------------------------------------ life cycle

    def start(self) -> FakeDashboard:
        self._thread = threading.Thread(target=self._run, name="fake-dashboard", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the fake dashboard did not start within 15 s")
        if self._error is not None:
            raise RuntimeError(f"the fake dashboard did not start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        """Close the event streams, stop the server and its loop, join the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop closed in between
                pass
        if self._thread is not None:
            self._thread.join(15)
            if self._thread.is_alive():
                raise RuntimeError("the fake dashboard's thread did not stop within 15 s")
            self._thread = None

    def __enter__(self) -> FakeDashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the server's side (its loop)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/api/events", self._events)
        app.router.add_post("/api/action", self._action)
        app.router.add_static("/static/", self.static_dir)
        app.on_shutdown.append(self._close_streams)
        runner = web.AppRunner(app, shutdown_timeout=2.0)
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            await runner.cleanup()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    async def _publish(self, chunk: bytes) -> None:
        self._history.append(chunk)
        for q in self._subscribers:
            q.put_nowait(chunk)

    async def _close_streams(self, app: web.Application) -> None:
        for q in self._subscribers:
            q.put_nowait(None)

    async def _index(self, request: web.Request) -> web.Response:
        text = (self.static_dir / "index.html").read_text(encoding="utf-8")
        text = text.replace("{{TOKEN}}", html.escape(self.token)).replace(
            "{{TITLE}}", html.escape(self.title)
        )
        return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        q: asyncio.Queue[bytes | None] = asyncio.Queue()
        for chunk in self._history:  # what a page that connects now has missed
            q.put_nowait(chunk)
        self._subscribers.add(q)
        try:
            await resp.write(b"retry: 500\n\n")
            while (chunk := await q.get()) is not None:
                await resp.write(chunk)
        except ConnectionResetError:
            pass
        finally:
            self._subscribers.discard(q)
        return resp

    def _record(self, body: Any, token: str | None, status: int, valid: bool = False) -> None:
        with self._cond:
            self.posts.append(Posted(body, token, status, valid))
            self._cond.notify_all()

    async def _action(self, request: web.Request) -> web.Response:
        token = request.headers.get(TOKEN_HEADER)
        text = await request.text()
        if self.action_delay:
            await asyncio.sleep(self.action_delay)
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = None
        if token != self.token:
            self._record(body, token, 403)
            return web.json_response({"error": f"missing or wrong {TOKEN_HEADER} header"}, status=403)
        try:
            action = Action.model_validate(body)
        except ValueError as exc:  # pydantic's ValidationError is one
            self._record(body, token, 400)
            return web.json_response({"error": str(exc)}, status=400)
        with self._cond:
            reply = self._replies.popleft() if self._replies else None
        if reply is not None:
            self._record(body, token, reply[0], valid=True)
            return web.json_response(reply[1], status=reply[0])
        self._record(body, token, 200, valid=True)
        target = action.host or action.link or action.path
        result = ActionResult(ok=True, message=f"{action.action} {target}: accepted by the fake server")
        return web.json_response(result.model_dump())
