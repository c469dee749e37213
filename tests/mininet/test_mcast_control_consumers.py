"""The mapping DNS and the redirector consume the edges' multicast heartbeats in a built ``mini``.

``CdnOptions(multicast=True)`` gives dns1 and redir (members of the control group) a ``control`` section:
they hear every edge's heartbeats, take their load, and drop an edge whose heartbeats stop even though
its HTTP health probes still succeed (down if either says down). Heartbeats are silenced by dropping
e2's outgoing control-group datagrams with iptables inside e2; its HTTP service keeps running.

Set ``CDNLAB_CONTROL_TEST_SWITCH_PREFIX=mk`` to rename the switches (s1 -> mk1, ...) so the test does not
collide with another ``mini`` being built on the machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
import yaml

from contract.mcast_wire import CONTROL_PORT as MCAST_CONTROL_PORT
from testbed.net.build import BuildOptions, CdnNet
from testbed.net.launch import CDN_NAME, CdnOptions, CdnServices
from testbed.net.spec import parse_topology, rename_switches, resolve_topology_path
from testbed.services.catalog import Catalog, CatalogConfig
from testbed.util import wait_until

pytestmark = pytest.mark.mininet

DROP_HEARTBEATS = f"OUTPUT -p udp --dport {MCAST_CONTROL_PORT} -j DROP"


def mini() -> dict:
    data = yaml.safe_load(resolve_topology_path("mini").read_text())
    prefix = os.environ.get("CDNLAB_CONTROL_TEST_SWITCH_PREFIX")
    if prefix:
        rename_switches(data, prefix)
    return data


@pytest.fixture(scope="module")
def ccdn() -> Iterator[tuple[CdnNet, CdnServices]]:
    cn = CdnNet(parse_topology(mini(), "mini"), BuildOptions())
    try:
        cn.start()
        opts = CdnOptions(
            multicast=True,
            roles=("origin", "edge", "dns", "redirector"),
            heartbeat_interval=0.3,
            control_miss_limit=3,
        )
        yield cn, CdnServices(cn, opts).start()
    finally:
        cn.stop()


def redir_stats(svc: CdnServices) -> dict:
    try:
        return svc.service_stats("redir")  # with the run's management token
    except RuntimeError:
        return {}


def redirect_target(cn: CdnNet, client: str, path: str = "/obj") -> str:
    out = cn.host(client).cmd(
        f"curl -s -m 5 -o /dev/null -w '%{{redirect_url}}' http://{cn.ip('redir')}{path}"
    )
    return out.strip().split("//", 1)[-1].split(":", 1)[0].split("/", 1)[0]


def dns_answer(cn: CdnNet, client: str) -> str:
    return cn.host(client).cmd(f"dig +short +time=1 +tries=1 @{cn.ip('dns1')} {CDN_NAME} A").strip()


def test_heartbeats_feed_load_and_liveness(ccdn) -> None:
    cn, svc = ccdn
    e1, e2 = cn.ip("e1"), cn.ip("e2")
    wait_until(
        lambda: all(
            (redir_stats(svc).get("control") or {}).get("edges", {}).get(e, {}).get("heartbeats", 0) >= 3
            for e in ("e1", "e2")
        ),
        30,
        0.2,
        what="the redirector hearing both edges' heartbeats",
    )
    # load: requests to e1 show up as e1's pushed requests/s at the redirector
    path = next(o.path for o in Catalog(CatalogConfig()).objects if o.cls == "image")
    cn.host("c1").cmd(f"for i in $(seq 150); do curl -s -o /dev/null http://{e1}{path}; done &")
    wait_until(
        lambda: (redir_stats(svc)["edges"]["e1"]["load"] or 0) > 0, 20, 0.1, what="e1's load from heartbeats"
    )
    assert redirect_target(cn, "c2") == e2 and dns_answer(cn, "c2") == e2  # west client -> west edge
    cn.host("e2").cmd(f"iptables -A {DROP_HEARTBEATS}")
    try:
        wait_until(
            lambda: redir_stats(svc)["edges"]["e2"]["up"] is False,
            20,
            0.1,
            what="redirector: e2 silent -> down",
        )
        snap = redir_stats(svc)["edges"]["e2"]
        print(json.dumps(snap))
        assert snap["probe_up"] is True and snap["pushed_up"] is False  # HTTP fine, heartbeats gone
        assert redirect_target(cn, "c2") == e1
        wait_until(lambda: dns_answer(cn, "c2") == e1, 20, 0.2, what="mapping DNS: e2 out of the answers")
    finally:
        cn.host("e2").cmd(f"iptables -D {DROP_HEARTBEATS}")
    wait_until(lambda: redirect_target(cn, "c2") == e2, 20, 0.2, what="redirector: e2 back")
    wait_until(lambda: dns_answer(cn, "c2") == e2, 20, 0.2, what="mapping DNS: e2 back")
