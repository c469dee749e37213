"""`fail` and `recover` for every role of a running CDN (mini): the process state and what a client sees,
after the failure and after the recovery. One network for the module; each test leaves it healthy."""

from __future__ import annotations

import re

import pytest

from testbed.net.launch import CdnServices, start_services
from testbed.util import wait_until

pytestmark = pytest.mark.mininet
WARM, COLD = "/img/img0001.jpg", "/img/img0004.jpg"  # in every edge's cache / never fetched before


@pytest.fixture(scope="module")
def cdn(module_cdn_net) -> CdnServices:
    cn = module_cdn_net("mini")
    return start_services(cn)


def _code(svc: CdnServices, client: str, url: str, timeout: float = 3) -> str:
    out = svc.cn.host(client).cmd(f"curl -s -o /dev/null -m {timeout} -w '%{{http_code}}' {url}")
    return out.strip()[-3:]


def _served_by(svc: CdnServices, client: str, path: str) -> str | None:
    vip = svc.cn.topo.anycast[0].vip
    out = svc.cn.host(client).cmd(f"curl -s -m 3 -o /dev/null -D - http://{vip}{path}")
    m = re.search(r"(?im)^x-served-by:\s*(\S+)", out)
    return m.group(1) if m else None


def _dig(svc: CdnServices, client: str, server: str, name: str) -> str:
    return svc.cn.host(client).cmd(f"dig +time=1 +tries=1 @{svc.cn.ip(server)} {name} A")


def test_edge(cdn: CdnServices) -> None:
    assert _served_by(cdn, "c1", WARM) == "e1"
    effect = cdn.fail("e1")
    assert cdn.service_process("e1") is None and "route around" in effect
    wait_until(lambda: _served_by(cdn, "c1", WARM) == "e2", 10, 0.1, what="anycast moving c1 to e2")
    cdn.recover("e1")
    assert cdn.service_process("e1") is not None
    wait_until(lambda: _served_by(cdn, "c1", WARM) == "e1", 10, 0.1, what="anycast bringing c1 back to e1")


def test_origin(cdn: CdnServices) -> None:
    e1 = f"http://{cdn.cn.ip('e1')}"
    assert _code(cdn, "c1", e1 + WARM) == "200"  # now in e1's cache
    effect = cdn.fail("origin")
    assert cdn.service_process("origin") is None and "miss fails" in effect
    assert _code(cdn, "c1", e1 + WARM) == "200"  # what the edge holds is still served
    assert _code(cdn, "c1", e1 + COLD, timeout=15) in ("502", "504")  # a miss has nowhere to go
    cdn.recover("origin")
    assert cdn.service_process("origin") is not None
    assert _code(cdn, "c1", e1 + COLD) == "200"


def test_dns(cdn: CdnServices) -> None:
    assert "status: NOERROR" in _dig(cdn, "c1", "res1", "www.customer.example")  # now in res1's cache
    effect = cdn.fail("dns1")
    assert cdn.service_process("dns1") is None and "from their cache" in effect
    assert "no servers could be reached" in _dig(cdn, "c1", "dns1", "a73.g.cdnlab.net")  # it is gone
    cached = _dig(cdn, "c1", "res1", "www.customer.example")
    assert "status: NOERROR" in cached and "a73.g.cdnlab.net" in cached  # the resolver answers from cache
    cdn.recover("dns1")
    assert cdn.service_process("dns1") is not None
    assert "status: NOERROR" in _dig(cdn, "c1", "dns1", "a73.g.cdnlab.net")


def test_resolver(cdn: CdnServices) -> None:
    effect = cdn.fail("res1")
    assert cdn.service_process("res1") is None and "time out" in effect
    # unbound died with its wrapper (it would otherwise keep answering)
    assert "no servers could be reached" in _dig(cdn, "c1", "res1", "www.customer.example")
    assert _served_by(cdn, "c1", WARM) == "e1"  # anycast does not need it
    cdn.recover("res1")
    assert cdn.service_process("res1") is not None
    assert "status: NOERROR" in _dig(cdn, "c1", "res1", "www.customer.example")


def test_redirector(cdn: CdnServices) -> None:
    url = f"http://{cdn.cn.ip('redir')}{WARM}"
    assert _code(cdn, "c1", url) == "302"
    effect = cdn.fail("redir")
    assert cdn.service_process("redir") is None and "redirect fetches fail" in effect
    assert _code(cdn, "c1", url) == "000"  # refused
    assert _served_by(cdn, "c1", WARM) == "e1"
    cdn.recover("redir")
    assert cdn.service_process("redir") is not None and _code(cdn, "c1", url) == "302"


@pytest.mark.parametrize("kind", ["link", "host"])
def test_client(cdn: CdnServices, kind: str) -> None:
    with pytest.raises(ValueError, match="c2 is a client and runs no CDN service process.*'host'.*'link'"):
        cdn.fail("c2", "process")
    assert cdn.cn.ping_rtt_ms("c1", cdn.cn.ip("c2"), count=2) is not None
    assert "cut off" in cdn.fail("c2", kind)
    assert cdn.cn.ping_rtt_ms("c1", cdn.cn.ip("c2"), count=2) is None
    assert _code(cdn, "c2", f"http://{cdn.cn.ip('e2')}{WARM}") == "000"  # and it reaches nothing
    cdn.recover("c2", kind)
    assert cdn.cn.ping_rtt_ms("c1", cdn.cn.ip("c2"), count=3) is not None
    assert _code(cdn, "c2", f"http://{cdn.cn.ip('e2')}{WARM}") == "200"


def test_host_failure_of_a_service_is_silent_and_recovers(cdn: CdnServices) -> None:
    url = f"http://{cdn.cn.ip('redir')}{WARM}"
    cdn.fail("redir", "host")
    assert cdn.service_process("redir") is None
    out = cdn.cn.host("c1").cmd(f"curl -s -o /dev/null -m 2 -w '%{{http_code}} %{{exitcode}}' {url}")
    assert out.strip().endswith("000 28"), out  # a timeout (28), not a refusal (7): nothing answers
    cdn.recover("redir", "host")
    assert _code(cdn, "c1", url) == "302"


def test_unknown_kind_and_host(cdn: CdnServices) -> None:
    with pytest.raises(ValueError, match="unknown failure kind 'sideways': process, host, link"):
        cdn.fail("e1", "sideways")
    with pytest.raises(KeyError):
        cdn.fail("nobody")
