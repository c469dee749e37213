"""The services' management plane: who may call a control endpoint (purge, stats, faults, pushes).

Every run has a management token, made fresh by the launcher (:class:`testbed.net.launch.CdnServices`) and put
in each service's config as ``admin_token``. A control request carries it as a bearer token (RFC 6750
§2.1): ``Authorization: Bearer <token>``. Without it, or with a wrong one, the service answers
``403 Forbidden`` and does nothing; the token is compared in constant time (:func:`hmac.compare_digest`).
That is how a real CDN closes its purge API to the clients it serves.

A service started without a token (alone on loopback, in the unit tests and the labs) accepts control
requests from loopback peers only, so a service put in an emulated host without one is still closed to
that host's clients. Health endpoints stay open: the controller's liveness probes, the health checkers'
and the resolvers' probes need them. The origin's catalog (the list of its objects) is public too.

What the token does not protect against: an emulated host is a network namespace, not a separate machine,
so a process started as root in a client host can read the run's files. The plane protects the CDN from
its clients' *requests*, which is what every experiment and lab exercise sends.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

#: the request field a control request carries its credential in (RFC 6750 §2.1)
AUTH_FIELD = "Authorization"
SCHEME = "Bearer"


def bearer(token: str) -> dict[str, str]:
    """The request field that authorises a control request with ``token``."""
    return {AUTH_FIELD: f"{SCHEME} {token}"}


def header_line(token: str) -> str:
    """``Authorization: Bearer <token>``, as curl reads it from a file (``curl -H @FILE``)."""
    return f"{AUTH_FIELD}: {SCHEME} {token}"


def _is_loopback(peer: str | None) -> bool:
    if not peer:
        return False
    try:
        return ipaddress.ip_address(peer.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def presented(headers: Mapping[str, str]) -> str | None:
    """The bearer token a request presents, or None (no field, another scheme, or an empty token)."""
    value = headers.get(AUTH_FIELD, "")
    scheme, _, credential = value.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != SCHEME.lower() or not credential:
        return None
    return credential


def authorized(headers: Mapping[str, str], peer: str | None, token: str | None) -> bool:
    """May this request call a control endpoint? With a token configured: only if it presents that token.
    Without one: only from a loopback peer."""
    if not token:
        return _is_loopback(peer)
    given = presented(headers)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def refusal(what: str, token: str | None) -> web.Response:
    """The 403 a control request without the run's management token gets; it names what was refused."""
    why = (
        "it needs this run's management token (Authorization: Bearer <token>; `cdnlab` commands send it)"
        if token
        else "this service has no management token and accepts control requests from loopback only"
    )
    return web.json_response(
        {"error": f"{what} refused: {why}"}, status=403, headers={"Cache-Control": "no-store"}
    )


def check(request: web.BaseRequest, token: str | None, what: str) -> web.Response | None:
    """None when ``request`` may call control endpoint ``what``, else the 403 to answer it with."""
    if authorized(request.headers, request.remote, token):
        return None
    return refusal(what, token)


def guard(
    token: str | None,
    prefix: str,
    open_paths: frozenset[str],
    on_refused: Callable[[], None] | None = None,
) -> Middleware:
    """An aiohttp middleware closing every path under ``prefix`` but ``open_paths`` to requests without
    the management token (the origin's ``/_origin/``, the redirector's ``/_redirector/``)."""

    @web.middleware
    async def admin_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith(prefix) and path not in open_paths:
            refused = check(request, token, f"{request.method} {path}")
            if refused is not None:
                if on_refused is not None:
                    on_refused()
                return refused
        return await handler(request)

    return admin_guard
