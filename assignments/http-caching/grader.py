"""Grader of lab http-caching: a table of RFC 9111 header cases, then the student's functions in a real edge.

The expected values come from the testbed's own implementation (``testbed/services/freshness.py``), which
follows RFC 9111 for a shared cache. The edge checks patch the student's four functions into
``testbed.services.edge.cache`` (the edge's cache core) and put a real origin (``testbed.services.origin``) behind it on loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

from testbed.grade import Check, Fail, describe_exception
from testbed.services import freshness as ref

TITLE = "HTTP caching: freshness lifetime, age, storable?, must revalidate? (RFC 9111)"
MODULE = "freshness"
#: the edge's own freshness decisions: a submission may use the parsing helpers only (contract.import_guard)
REFERENCE = tuple(
    f"testbed.services.freshness:{n}"
    for n in (
        "freshness_lifetime",
        "current_age",
        "is_storable",
        "needs_revalidation",
        "has_explicit_freshness",
        "heuristic_lifetime",
        "delta_seconds",
        "_delta_seconds",
        "stale_if_error_window",
        "stale_while_revalidate_window",
    )
)
SLIDE = 'lecture slide 2 "HTTP Caching"'

DATE = "Mon, 23 Nov 2026 12:00:00 GMT"
PLUS_1H = "Mon, 23 Nov 2026 13:00:00 GMT"
MINUS_1H = "Mon, 23 Nov 2026 11:00:00 GMT"
T_DATE = 1795435200.0  # DATE as POSIX seconds


def _fmt(x: Any) -> str:
    return repr(dict(x)) if isinstance(x, dict) else repr(x)


def _table(fn_name: str, rows: list[tuple[str, tuple, dict]], hint: str) -> Callable[[ModuleType], str]:
    """A check calling ``student.fn_name(*args, **kw)`` on each row, expecting the reference's answer."""

    def run(mod: ModuleType) -> str:
        fn = getattr(mod, fn_name, None)
        if not callable(fn):
            raise Fail(f"your module has no function {fn_name}()")
        want_fn = getattr(ref, fn_name)
        for label, args, kw in rows:
            want = want_fn(*args, **kw)
            got = fn(*args, **kw)
            if isinstance(want, float) or isinstance(got, float):
                ok = isinstance(got, int | float) and not isinstance(got, bool) and abs(got - want) < 1e-6
            else:
                ok = got == want
            if not ok:
                shown = ", ".join([_fmt(a) for a in args] + [f"{k}={v!r}" for k, v in kw.items()])
                raise Fail(f"[{label}] {fn_name}({shown}): expected {want!r}, got {got!r}")
        return f"{len(rows)} cases agree with RFC 9111"

    return run


H = dict  # readability: H(**{"Cache-Control": ...})

LIFETIME_ORDER = [
    ("s-maxage wins in a shared cache", ({"Cache-Control": "max-age=60, s-maxage=300"},), {}),
    ("private cache ignores s-maxage", ({"Cache-Control": "max-age=60, s-maxage=300"},), {"shared": False}),
    ("max-age beats Expires", ({"Cache-Control": "max-age=60", "Date": DATE, "Expires": PLUS_1H},), {}),
    ("directive names are case-insensitive", ({"cache-control": "Public, MAX-AGE=120"},), {}),
    ("max-age=0", ({"Cache-Control": "max-age=0"},), {}),
]
LIFETIME_EXPIRES = [
    ("Expires - Date", ({"Date": DATE, "Expires": PLUS_1H},), {}),
    ("Expires before Date is 0, never negative", ({"Date": DATE, "Expires": MINUS_1H},), {}),
    ("invalid Expires means already expired", ({"Date": DATE, "Expires": "0"},), {}),
    (
        "invalid max-age makes the response stale (Expires is not used)",
        ({"Cache-Control": "max-age=soon", "Date": DATE, "Expires": PLUS_1H},),
        {},
    ),
]
LIFETIME_NONE = [
    ("no explicit freshness -> 0 (no heuristics)", ({"Last-Modified": MINUS_1H, "Date": DATE},), {}),
    ("public alone gives no lifetime", ({"Cache-Control": "public"},), {}),
    ("empty headers", ({},), {}),
]
AGE = [
    ("no Date, no Age: resident time only", ({}, T_DATE, T_DATE, T_DATE + 30), {}),
    ("apparent age from Date", ({"Date": MINUS_1H}, T_DATE, T_DATE, T_DATE), {}),
    ("Age header plus response delay", ({"Date": DATE, "Age": "100"}, T_DATE - 2, T_DATE, T_DATE + 10), {}),
    (
        "the larger of apparent and corrected age",
        ({"Date": MINUS_1H, "Age": "100"}, T_DATE, T_DATE, T_DATE + 5),
        {},
    ),
    ("Date in the future counts as 0", ({"Date": PLUS_1H}, T_DATE, T_DATE, T_DATE + 1), {}),
    ("invalid Age counts as 0", ({"Date": DATE, "Age": "old"}, T_DATE, T_DATE, T_DATE + 7), {}),
]
STORABLE = [
    ("plain GET 200 with max-age", ("GET", 200, {}, {"Cache-Control": "max-age=60"}), {}),
    ("no-store response", ("GET", 200, {}, {"Cache-Control": "no-store"}), {}),
    ("no-store request", ("GET", 200, {"Cache-Control": "no-store"}, {"Cache-Control": "max-age=60"}), {}),
    ("private in a shared cache", ("GET", 200, {}, {"Cache-Control": "private, max-age=60"}), {}),
    (
        "private in a private cache",
        ("GET", 200, {}, {"Cache-Control": "private, max-age=60"}),
        {"shared": False},
    ),
    ("no-cache IS storable", ("GET", 200, {}, {"Cache-Control": "no-cache", "ETag": '"v1"'}), {}),
    ("POST is not stored", ("POST", 200, {}, {"Cache-Control": "max-age=60"}), {}),
    ("500 without explicit freshness is not stored", ("GET", 500, {}, {}), {}),
    ("500 with max-age is stored (any final status)", ("GET", 500, {}, {"Cache-Control": "max-age=60"}), {}),
    ("206 is not stored (partial)", ("GET", 206, {}, {"Cache-Control": "max-age=60"}), {}),
    ("404 is storable", ("GET", 404, {}, {}), {}),
    ("Vary: * is never stored", ("GET", 200, {}, {"Cache-Control": "max-age=60", "Vary": "*"}), {}),
    (
        "Vary: Accept-Language is fine",
        ("GET", 200, {}, {"Cache-Control": "max-age=60", "Vary": "Accept-Language"}),
        {},
    ),
    (
        "Authorization without public",
        ("GET", 200, {"Authorization": "Basic eDp5"}, {"Cache-Control": "max-age=60"}),
        {},
    ),
    (
        "Authorization with public",
        ("GET", 200, {"Authorization": "Basic eDp5"}, {"Cache-Control": "public, max-age=60"}),
        {},
    ),
    (
        "Authorization with s-maxage",
        ("GET", 200, {"Authorization": "Basic eDp5"}, {"Cache-Control": "s-maxage=60"}),
        {},
    ),
]
REVALIDATE = [
    ("fresh", ({"Cache-Control": "max-age=60"}, 10.0), {}),
    ("stale", ({"Cache-Control": "max-age=60"}, 61.0), {}),
    ("exactly at the lifetime is stale", ({"Cache-Control": "max-age=60"}, 60.0), {}),
    ("s-maxage counts in a shared cache", ({"Cache-Control": "max-age=10, s-maxage=100"}, 50.0), {}),
    ("no-cache response, even when fresh", ({"Cache-Control": "no-cache, max-age=600"}, 1.0), {}),
    ("no lifetime at all", ({}, 0.0), {}),
    ("request no-cache", ({"Cache-Control": "max-age=600"}, 5.0, {"Cache-Control": "no-cache"}), {}),
    (
        "request Pragma: no-cache (HTTP/1.0)",
        ({"Cache-Control": "max-age=600"}, 5.0, {"Pragma": "no-cache"}),
        {},
    ),
    (
        "request max-age exceeded",
        ({"Cache-Control": "max-age=600"}, 100.0, {"Cache-Control": "max-age=30"}),
        {},
    ),
    (
        "request max-age not exceeded",
        ({"Cache-Control": "max-age=600"}, 10.0, {"Cache-Control": "max-age=30"}),
        {},
    ),
]


# ---------------------------------------------------------------------------------------------------------
# the student's functions inside a real edge


@contextmanager
def _patched_edge(mod: ModuleType) -> Iterator[None]:
    from testbed.services.edge import cache as edge  # the edge's cache core calls the four functions

    names = EDGE_FUNCTIONS
    missing = [n for n in names if not callable(getattr(mod, n, None))]
    if missing:
        raise Fail(f"your module lacks {', '.join(missing)}")
    saved = {n: getattr(edge, n) for n in names}
    for n in names:
        setattr(edge, n, getattr(mod, n))
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(edge, n, f)


async def _with_cdn(body: Callable[[Any, Any, Any], Any]) -> str:
    from testbed.services.catalog import CatalogConfig
    from testbed.services.edge import Edge, EdgeConfig
    from testbed.services.origin import Origin, OriginConfig

    origin = Origin(OriginConfig(port=0, catalog=CatalogConfig(seed=7, objects=12, max_bytes=20_000)))
    await origin.start()
    edge = None
    try:
        edge = Edge(EdgeConfig(origin_url=origin.url, port=0))
        await edge.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            return await body(origin, edge, http)
    finally:
        if edge is not None:
            await edge.close()
        await origin.close()


async def _get(http: Any, url: str, **headers: str) -> tuple[int, str]:
    async with http.get(url, headers=headers) as r:
        await r.read()
        return r.status, r.headers.get("X-Cache", "")


class _Collect(logging.Handler):
    """Keeps the exceptions aiohttp logs when a request handler (the edge, calling student code) fails."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            self.errors.append(describe_exception(e, None) + _student_frame(e))


def _student_frame(e: BaseException) -> str:
    """Where the innermost frame outside the testbed and site-packages (the student's file) raised."""
    if hasattr(e, "cdnlab_where"):  # raised in the sandbox: describe_exception already said where
        return ""
    for fs in reversed(traceback.extract_tb(e.__traceback__)):
        if not any(part in fs.filename for part in ("site-packages", "/testbed/", "/lib/python")):
            return f" (at {os.path.basename(fs.filename)}:{fs.lineno} in {fs.name})"
    return ""


def _edge_check(scenario: Callable[[Any, Any, Any], Any]) -> Callable[[ModuleType], str]:
    def run(mod: ModuleType) -> str:
        # aiohttp logs exceptions of request handlers, asyncio those of tasks that died (e.g. by the
        # grader's time limit): collect them to tell the student what their code did inside the edge
        loggers = [logging.getLogger(n) for n in ("aiohttp.server", "asyncio")]
        handler = _Collect()
        saved = [lg.propagate for lg in loggers]
        for lg in loggers:
            lg.addHandler(handler)
            lg.propagate = False
        try:
            with _patched_edge(mod):
                return asyncio.run(_with_cdn(scenario))
        except Fail as e:
            if handler.errors:
                raise Fail(f"{e}; inside the edge your code raised {handler.errors[-1]}") from None
            raise
        except (TimeoutError, aiohttp.ClientError) as e:
            why = handler.errors[-1] if handler.errors else f"{type(e).__name__}: {e}"
            raise Fail(
                f"the edge did not answer ({why}); does your code loop forever inside the edge?"
            ) from None
        finally:
            for lg, p in zip(loggers, saved, strict=True):
                lg.removeHandler(handler)
                lg.propagate = p

    return run


async def _fresh_hit(origin: Any, edge: Any, http: Any) -> str:
    obj = next(o for o in origin.catalog.objects if o.cls == "image")  # public, max-age=3600
    url = edge.url + obj.path
    seq = [
        await _get(http, url),
        await _get(http, url),
        await _get(http, url, **{"Cache-Control": "max-age=600"}),
    ]
    want = [(200, "MISS"), (200, "HIT"), (200, "HIT")]
    if seq != want:
        raise Fail(
            f"GET {obj.path} (Cache-Control: public, max-age=3600) three times through the edge, the "
            f"third with request 'Cache-Control: max-age=600': expected (status, X-Cache) {want}, got {seq}"
        )
    return "image: MISS, HIT, HIT"


async def _revalidated(origin: Any, edge: Any, http: Any) -> str:
    url = edge.url + "/dyn/stock"  # Cache-Control: no-cache + ETag
    first, second = await _get(http, url), await _get(http, url)
    third = await _get(http, url, **{"Cache-Control": "max-age=600"})
    if (first, second, third) != ((200, "MISS"), (200, "REVALIDATED"), (200, "REVALIDATED")):
        raise Fail(
            "GET /dyn/stock (Cache-Control: no-cache, ETag) three times: expected X-Cache MISS, "
            f"REVALIDATED (a 304 from the origin refreshed the stored copy), REVALIDATED; got "
            f"{first}, {second}, {third}"
        )
    if origin.by_status.get(304, 0) < 2:
        raise Fail(
            f"the origin answered 304 {origin.by_status.get(304, 0)} times, expected 2 conditional GETs"
        )
    origin.update("/dyn/stock")
    after = await _get(http, url)
    if after != (200, "MISS"):
        raise Fail(f"after the origin published a new version, expected (200, 'MISS'), got {after}")
    return "no-cache object: MISS, REVALIDATED (304), new version -> MISS"


async def _not_stored(origin: Any, edge: Any, http: Any) -> str:
    for path in ("/dyn/ad", "/dyn/personal"):  # no-store; private
        seq = [await _get(http, edge.url + path), await _get(http, edge.url + path)]
        if seq != [(200, "MISS"), (200, "MISS")]:
            raise Fail(
                f"GET {path} twice: a shared cache must not store it (no-store / private), expected "
                f"[(200, 'MISS'), (200, 'MISS')], got {seq}"
            )
    return "no-store and private responses are never served from cache"


# ---------------------------------------------------------------------------------------------------------
# network stage: the student's functions inside the edges of a running CDN, a client curls through them

EDGE_FUNCTIONS = ("freshness_lifetime", "current_age", "is_storable", "needs_revalidation")


def _curl(cn: Any, client: str, url: str, **headers: str) -> tuple[int, str]:
    hs = " ".join(f"-H '{k.replace('_', '-')}: {v}'" for k, v in headers.items())
    out = cn.host(client).cmd(f"curl -s -m 5 -o /dev/null -D - {hs} {url}")
    status = next((int(m.group(1)) for m in [re.search(r"(?m)^HTTP/\S+ (\d{3})", out)] if m), 0)
    xc = re.search(r"(?im)^x-cache:\s*(\S+)", out)
    return status, xc.group(1).upper() if xc else ""


def _edge_network(mod: ModuleType, label: str, origin_cc: dict[str, str], body: Callable[..., str]) -> str:
    from testbed.grade_network import lab_network, submission_of
    from testbed.net.launch import CdnOptions

    sub = submission_of(mod, REFERENCE, {f"testbed.services.edge.cache:{n}": n for n in EDGE_FUNCTIONS})
    opts = CdnOptions(
        roles=("origin", "edge"),
        submissions={"edge": sub.model_dump(mode="json")},
        origin_cache_control=origin_cc,
    )
    with lab_network("mini", opts) as (cn, svc):
        edge = f"http://{cn.ip('e1')}"

        def get(path: str, **headers: str) -> tuple[int, str]:
            return _curl(cn, "c1", edge + path, **headers)

        out = cn.host("c1").cmd(f"curl -s -m 5 http://{cn.ip('origin')}/_origin/catalog")
        cat = json.loads(out[out.index("{") :])
        paths: dict[str, list[str]] = {}
        for o in cat["objects"]:
            paths.setdefault(o.get("class", o.get("kind")), []).append(o["path"])
        get.paths = paths  # type: ignore[attr-defined]

        try:
            return f"{label}: " + body(cn, svc, get)
        except Fail as e:
            log = Path(cn.run_dir) / "logs" / "e1.log" if cn.run_dir else None
            errs = []
            if log is not None and log.exists():
                errs = [ln for ln in log.read_text(errors="replace").splitlines() if "Error" in ln][-1:]
            raise Fail(f"[{label}] {e}" + (f"; the edge logged: {errs[-1]}" if errs else "")) from None


def _expect_seq(what: str, got: list[tuple[int, str]], want: list[tuple[int, str]]) -> None:
    if got != want:
        raise Fail(f"{what}: expected (status, X-Cache) {want}, got {got}")


def _visible_workload(cn: Any, svc: Any, get: Callable[..., tuple[int, str]]) -> str:
    img = get.paths["image"][0]  # type: ignore[attr-defined]
    _expect_seq(
        f"GET {img} (public, max-age=3600) three times from c1 through e1, the third with request max-age=600",
        [get(img), get(img), get(img, Cache_Control="max-age=600")],
        [(200, "MISS"), (200, "HIT"), (200, "HIT")],
    )
    _expect_seq(
        "GET /dyn/stock (no-cache, ETag) three times",
        [get("/dyn/stock") for _ in range(3)],
        [(200, "MISS"), (200, "REVALIDATED"), (200, "REVALIDATED")],
    )
    for path in ("/dyn/ad", "/dyn/personal"):
        _expect_seq(f"GET {path} (no-store / private) twice", [get(path), get(path)], [(200, "MISS")] * 2)
    css = get.paths["css"][0]  # type: ignore[attr-defined]
    first = get(css)
    time.sleep(1.5)  # max-age=1 is over
    svc.fail("origin")
    try:
        stale = get(css)
    finally:
        svc.recover("origin")
    _expect_seq(
        f"GET {css} (max-age=1, stale-if-error=60), then again 1.5 s later with the origin down",
        [first, stale],
        [(200, "MISS"), (200, "STALE")],
    )
    return (
        "fresh HITs, 304 revalidation, never storing no-store/private, stale served when the origin is down"
    )


def _hidden_workload(cn: Any, svc: Any, get: Callable[..., tuple[int, str]]) -> str:
    img = get.paths["image"][1]  # type: ignore[attr-defined]
    seq = [get(img), get(img)]
    time.sleep(1.5)  # s-maxage=1 is over for the edge; max-age=600 (and Expires) is not
    seq.append(get(img))
    _expect_seq(
        f"GET {img} (public, max-age=600, s-maxage=1) twice, then 1.5 s later: a shared cache goes by s-maxage",
        seq,
        [(200, "MISS"), (200, "HIT"), (200, "REVALIDATED")],
    )
    js = get.paths["js"][0]  # type: ignore[attr-defined]
    _expect_seq(
        f"GET {js} (public, max-age=soon: invalid, so stale at once) twice",
        [get(js), get(js)],
        [(200, "MISS"), (200, "REVALIDATED")],
    )
    return "s-maxage over max-age and Expires, an invalid max-age is stale"


def check_network_visible(mod: ModuleType) -> str:
    return _edge_network(mod, "mini", {"css": "public, max-age=1, stale-if-error=60"}, _visible_workload)


def check_network_hidden(mod: ModuleType) -> str:
    return _edge_network(
        mod,
        "hidden workload",
        {"image": "public, max-age=600, s-maxage=1", "js": "public, max-age=soon"},
        _hidden_workload,
    )


def checks() -> list[Check]:
    h = f"{SLIDE}; RFC 9111 §4.2.1 (freshness lifetime)"
    return [
        Check("lifetime: s-maxage > max-age > Expires", _table("freshness_lifetime", LIFETIME_ORDER, h), h),
        Check(
            "lifetime: Expires - Date",
            _table("freshness_lifetime", LIFETIME_EXPIRES, h),
            f"{SLIDE} ('Expires: <date>'); RFC 9111 §4.2.1, §5.3",
        ),
        Check(
            "lifetime: no explicit freshness is 0",
            _table("freshness_lifetime", LIFETIME_NONE, h),
            "RFC 9111 §4.2.2: this cache uses no heuristic freshness",
        ),
        Check(
            "current age",
            _table("current_age", AGE, ""),
            "RFC 9111 §4.2.3 (apparent_age, corrected_age_value, resident_time)",
        ),
        Check(
            "storable?",
            _table("is_storable", STORABLE, ""),
            f"{SLIDE} ('No-Cache', 'Private'); lecture slide 8 (uncachable content); RFC 9111 §3, §3.5, §4.1",
        ),
        Check(
            "must revalidate?",
            _table("needs_revalidation", REVALIDATE, ""),
            f"{SLIDE} ('If expired, use conditional GET'); RFC 9111 §4.2, §5.2.1, §5.2.2.4, §5.4",
        ),
        Check(
            "edge: fresh objects are HITs",
            _edge_check(_fresh_hit),
            "the edge calls your is_storable, freshness_lifetime and needs_revalidation",
            timeout=10,
        ),
        Check(
            "edge: no-cache object refreshed by a 304",
            _edge_check(_revalidated),
            f"{SLIDE} (If-None-Match -> 304 Not Modified); RFC 9111 §4.3",
            timeout=10,
        ),
        Check(
            "edge: no-store/private never stored",
            _edge_check(_not_stored),
            "lecture slide 8 (cookies, ads: uncachable); RFC 9111 §3",
            timeout=10,
        ),
        Check(
            "network (mini): your functions in the edges, a client through them",
            check_network_visible,
            "HITs, a 304 revalidation, no-store/private, stale-if-error with the origin killed (RFC 5861 §4)",
            timeout=600,
            points=2,
            stage="network",
        ),
        Check(
            "network (hidden workload): other Cache-Control at the origin",
            check_network_hidden,
            "RFC 9111 §4.2.1 (s-maxage first in a shared cache), §1.2.2 (invalid delta-seconds: stale)",
            timeout=600,
            points=2,
            visibility="after_due_date",
            stage="network",
        ),
    ]
