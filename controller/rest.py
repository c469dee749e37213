"""The controller's REST API on Ryu's WSGI server (listening on 127.0.0.1 only). See docs/controller-api.md.

GET  /topology, /anycast, /multicast
POST /anycast/<name>/drain/<member>, /anycast/<name>/restore/<member>, /anycast/mode {"mode": ...}
"""

from __future__ import annotations

import json
from typing import Any

from controller import ryu_adapter as ra

_w = ra.wsgi()
ControllerBase, route, Response = _w.ControllerBase, _w.route, _w.Response
APP_KEY = "cdnlab_app"


def _json(obj: Any, status: int = 200) -> Any:
    body = json.dumps(obj, indent=1, default=str, sort_keys=True).encode() + b"\n"
    return Response(status=status, content_type="application/json", charset="utf-8", body=body)


def _error(status: int, message: str) -> Any:
    return _json({"error": message}, status)


class CdnlabRest(ControllerBase):
    def __init__(self, req: Any, link: Any, data: dict[str, Any], **config: Any) -> None:
        super().__init__(req, link, data, **config)
        self.app = data[APP_KEY]

    @route("cdnlab", "/topology", methods=["GET"])
    def topology(self, req: Any, **_: Any) -> Any:
        return _json(self.app.core.topology())

    @route("cdnlab", "/anycast", methods=["GET"])
    def anycast(self, req: Any, **_: Any) -> Any:
        return _json(self.app.core.anycast())

    @route("cdnlab", "/multicast", methods=["GET"])
    def multicast(self, req: Any, **_: Any) -> Any:
        return _json(self.app.core.multicast())

    def _drain(self, name: str, member: str, drained: bool) -> Any:
        try:
            msgs = self.app.core.set_drained(name, member, drained)
        except KeyError as e:
            return _error(404, str(e.args[0]))
        self.app.send(msgs)
        return _json(
            {
                "service": name,
                "member": member,
                "drained": drained,
                "choice": self.app.core.anycast()["services"][name]["choice"],
            }
        )

    @route("cdnlab", "/anycast/{name}/drain/{member}", methods=["POST"])
    def drain(self, req: Any, name: str, member: str, **_: Any) -> Any:
        return self._drain(name, member, True)

    @route("cdnlab", "/anycast/{name}/restore/{member}", methods=["POST"])
    def restore(self, req: Any, name: str, member: str, **_: Any) -> Any:
        return self._drain(name, member, False)

    @route("cdnlab", "/anycast/mode", methods=["POST"])
    def mode(self, req: Any, **_: Any) -> Any:
        try:
            body = json.loads(req.body or b"null")
        except ValueError as e:
            return _error(400, f"body is not JSON: {e}")
        if not isinstance(body, dict) or set(body) != {"mode"}:
            return _error(400, 'body must be {"mode": "destination" | "affinity"}')
        try:
            msgs = self.app.core.set_mode(body["mode"])
        except ValueError as e:
            return _error(400, str(e))
        self.app.send(msgs)
        return _json({"mode": self.app.core.mode})


def register(wsgi_app: Any, app: Any) -> None:
    wsgi_app.register(CdnlabRest, {APP_KEY: app})
