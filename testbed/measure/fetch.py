"""Timed HTTP fetches that steer a client to a replica by each of the lecture's three methods.

``via``:

* ``anycast`` (routing): connect straight to the CDN's anycast VIP; the network picks the edge;
* ``dns`` (naming): resolve the customer's name through the client's local resolver (which follows the
  CNAME chain to the CDN's mapping DNS), then connect to the address it returns;
* ``redirect`` (application): ask the redirector, which answers ``302`` to an edge; fetch from there.

Each fetch records the phases a browser would pay for — DNS, TCP connect, redirect exchange, time to
first byte, total — and which edge served it (``X-Served-By``) with its cache verdict (``X-Cache``);
the response's ``ETag``, when it has one, is kept in ``Sample.extra["etag"]`` (the version served).
The HTTP/1.1 exchange is written by hand on a plain socket so every phase is timed exactly.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

MAX_HEADER = 64 * 1024


@dataclass
class Sample:
    """One fetch. Times in milliseconds; ``error`` is empty on success."""

    t: float = 0.0  # wall-clock start (s since the epoch)
    client: str = ""
    via: str = ""
    path: str = ""
    dns_ms: float = 0.0
    connect_ms: float = 0.0
    redirect_ms: float = 0.0
    ttfb_ms: float = 0.0  # from sending the (final) request to the first response byte
    total_ms: float = 0.0  # everything, from the first DNS packet to the last body byte
    status: int = 0
    bytes: int = 0
    edge_ip: str = ""
    served_by: str = ""
    x_cache: str = ""
    error: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def row(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("extra")
        d.update(self.extra)
        return d


@dataclass
class Target:
    """Where the three methods start from."""

    vip: str | None = None
    resolver: str | None = None
    name: str = "www.customer.example"
    redirector: str | None = None
    port: int = 80


class FetchError(Exception):
    pass


async def resolve_a(resolver: str, name: str, timeout: float) -> tuple[str, float]:
    """Ask ``resolver`` for ``name``'s A record (recursion desired); (address, ms)."""
    q = dns.message.make_query(name, dns.rdatatype.A)
    t0 = time.perf_counter()
    r = await dns.asyncquery.udp(q, resolver, timeout=timeout)
    ms = (time.perf_counter() - t0) * 1000
    for rrset in r.answer:
        if rrset.rdtype == dns.rdatatype.A:
            return rrset[0].address, ms
    raise FetchError(f"dns: no A record for {name} (rcode {dns.rcode.to_text(r.rcode())})")


async def http_get(ip: str, port: int, host: str, path: str, timeout: float,
                   keep_body: bool = False, stage: list[str] | None = None,
                   ) -> tuple[dict[str, str], int, int, float, float, bytes]:
    """One HTTP/1.1 GET on a fresh connection: (headers, status, body bytes, connect ms, ttfb ms, body).
    ``stage[0]``, when given, says how far it got (``connect`` then ``response``), for error messages."""
    stage = stage if stage is not None else [""]
    stage[0] = "connect"
    t0 = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    t1 = time.perf_counter()
    stage[0] = "response"
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cdnlab-measure\r\n"
                     f"Connection: close\r\n\r\n".encode())
        await writer.drain()
        t2 = time.perf_counter()
        first = await asyncio.wait_for(reader.read(1), timeout)
        t3 = time.perf_counter()
        if not first:
            raise FetchError("connection closed before any response byte")
        head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        if len(head) > MAX_HEADER:
            raise FetchError("response header too large")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = await asyncio.wait_for(reader.read(), timeout)  # Connection: close -> read to EOF
        return headers, status, len(body), (t1 - t0) * 1000, (t3 - t2) * 1000, body if keep_body else b""
    finally:
        writer.close()


async def fetch(via: str, target: Target, path: str, client: str = "", timeout: float = 5.0,
                headers_out: dict[str, str] | None = None) -> Sample:
    """One timed fetch of ``path`` by method ``via``; never raises (errors land in ``Sample.error``, with
    ``extra["error_phase"]`` (``dns``, ``redirect connect``, ``connect``, ``response``, ...) and
    ``extra["error_addr"]`` saying where it failed, which :func:`explain` turns into a sentence).
    ``headers_out`` receives the final response's headers (and the redirect's ``Location``)."""
    s = Sample(t=time.time(), client=client, via=via, path=path)
    t0 = time.perf_counter()
    stage, where = ["setup"], [""]
    try:
        host = target.name
        if via == "anycast":
            if not target.vip:
                raise FetchError("no anycast VIP configured")
            ip = target.vip
        elif via == "dns":
            if not target.resolver:
                raise FetchError("no resolver configured")
            stage[0], where[0] = "dns", f"{target.resolver}:53"
            ip, s.dns_ms = await resolve_a(target.resolver, target.name, timeout)
        elif via == "redirect":
            if not target.redirector:
                raise FetchError("no redirector configured")
            r0 = time.perf_counter()
            where[0] = f"{target.redirector}:{target.port}"
            rstage = [""]
            try:
                headers, status, _, _, _, _ = await http_get(target.redirector, target.port, host, path, timeout,
                                                             stage=rstage)
            finally:
                stage[0] = f"redirect {rstage[0]}"
            if status not in (301, 302, 303, 307, 308) or "location" not in headers:
                raise FetchError(f"redirector answered {status} without a Location")
            if headers_out is not None:
                headers_out["redirect-location"] = headers["location"]
            loc = urlsplit(headers["location"])
            ip, path = loc.hostname or "", (loc.path or "/") + (f"?{loc.query}" if loc.query else "")
            target = Target(port=loc.port or 80, name=host)
            s.redirect_ms = (time.perf_counter() - r0) * 1000
        else:
            raise FetchError(f"unknown method {via!r} (anycast, dns or redirect)")
        where[0] = f"{ip}:{target.port}"
        headers, status, nbytes, s.connect_ms, s.ttfb_ms, _ = await http_get(ip, target.port, host, path, timeout,
                                                                            stage=stage)
        if headers_out is not None:
            headers_out.update(headers)
        s.status, s.bytes, s.edge_ip = status, nbytes, ip
        s.served_by, s.x_cache = headers.get("x-served-by", ""), headers.get("x-cache", "")
        if "etag" in headers:  # which version was served (invalidation experiment)
            s.extra["etag"] = headers["etag"]
        if status >= 500:
            s.error = f"http {status}"
    except (TimeoutError, OSError, asyncio.IncompleteReadError, FetchError, ValueError, dns.exception.DNSException) as e:
        s.error = f"{type(e).__name__}: {e}"[:200] or type(e).__name__
        s.extra["error_phase"], s.extra["error_addr"] = stage[0], where[0]
    s.total_ms = (time.perf_counter() - t0) * 1000
    return s


def explain(s: Sample, timeout: float = 5.0) -> str | None:
    """Why a fetch failed, in a sentence a student can act on (None when it did not fail).

    Distinguishes what ``curl``'s ``status 000`` hides: a DNS name that does not exist (NXDOMAIN) or a
    resolver that does not answer, a refused connection (nothing listens: the service is down), a
    connection that times out (the host is silent or unreachable), a server that accepts but never
    answers, and HTTP errors.
    """
    phase, addr, err = s.extra.get("error_phase", ""), s.extra.get("error_addr", ""), s.error
    if err.startswith("http ") or (not err and s.status >= 400):
        return (f"HTTP {s.status} from {s.served_by or s.edge_ip}: "
                f"{_HTTP_MEANING.get(s.status, 'a server error' if s.status >= 500 else 'a client error')}")
    if not err:
        return None
    if phase == "dns":
        if "NXDOMAIN" in err:
            return f"DNS: the name does not exist (NXDOMAIN), answered by the resolver {addr}"
        if "SERVFAIL" in err:
            return (f"DNS: the resolver {addr} could not resolve the name (SERVFAIL): the mapping DNS behind "
                    f"it may be down")
        if "rcode" in err or "no A record" in err:
            return f"DNS: no address for the name from the resolver {addr} ({err.split(': ', 1)[-1]})"
        if "Timeout" in err or "timed out" in err.lower():
            return f"DNS: no answer from the resolver {addr} within {timeout:g} s (timeout): is it running?"
        return f"DNS: asking the resolver {addr} failed: {err}"
    if "without a Location" in err:
        return f"redirect: the redirector {addr} {err.split('redirector ', 1)[-1]} (503: no live edge?)"
    who = "the redirector" if phase.startswith("redirect") else "the server"
    step = phase.removeprefix("redirect ")
    if step == "connect":
        if "Refused" in err:
            return f"connect: {who} {addr} refused the connection: nothing listens there (its service is down)"
        if "TimeoutError" in err or "timed out" in err.lower():
            return (f"connect: no answer from {who} {addr} within {timeout:g} s (timeout): the host is silent "
                    f"or unreachable")
        return f"connect: to {who} {addr} failed: {err.split(': ', 1)[-1] or err}"
    if step == "response":
        if "TimeoutError" in err:
            return f"response: {who} {addr} accepted the connection but sent no response within {timeout:g} s"
        return f"response: {who} {addr} broke off the exchange: {err}"
    return err


_HTTP_MEANING = {
    400: "the request was malformed",
    403: "forbidden",
    404: "no such object (check the path: the catalog is at /_origin/catalog on the origin)",
    500: "the server failed", 502: "the edge could not get the object from the origin (is the origin up?)",
    503: "no server available (every edge down?)", 504: "the edge timed out waiting for the origin",
}


def main(argv: list[str] | None = None) -> int:
    """``python -m testbed.measure.fetch --via dns --resolver IP PATH``: one timed fetch, as the
    experiments make them, printed as JSON (``sample``, ``headers``, ``explain``); run inside a host."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m testbed.measure.fetch", description=main.__doc__)
    ap.add_argument("path")
    ap.add_argument("--via", choices=["anycast", "dns", "redirect"], default="anycast")
    ap.add_argument("--vip", help="address to fetch from directly (anycast)")
    ap.add_argument("--resolver")
    ap.add_argument("--redirector")
    ap.add_argument("--name", default=Target.name, help="Host header, and the name resolved for --via dns")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args(argv)
    headers: dict[str, str] = {}
    target = Target(vip=a.vip, resolver=a.resolver, name=a.name, redirector=a.redirector, port=a.port)
    s = asyncio.run(fetch(a.via, target, a.path, timeout=a.timeout, headers_out=headers))
    print(json.dumps({"sample": s.row(), "headers": headers, "explain": explain(s, a.timeout)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
