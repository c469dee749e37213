"""The SDN controller withdraws an anycast member whose multicast heartbeats stop (controller/heartbeats.py).

A renamed copy of ``mini`` (switches ``hk1``/``hk2``, hosts ``hk*``, so nothing collides with a ``mini``
built elsewhere on the machine) is built with ``BuildOptions(extra={"control": ...})``: the builder makes
the run's key, the controller gets the control channel in its view, and the CDN's services
(``CdnOptions(multicast=True)``) reuse the key for the edges' heartbeats. Dropping one edge's heartbeats
with iptables inside that edge (OUTPUT, udp dport 7401) while its HTTP server keeps answering makes the
controller withdraw it from the VIP: the clients of its region are then served by the other edge
(``X-Served-By``); restoring the heartbeats brings it back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from contract.mcast_wire import CONTROL_PORT as MCAST_CONTROL_PORT
from testbed.net.build import BuildOptions, CdnNet
from testbed.net.launch import CdnOptions, CdnServices, start_services
from testbed.net.spec import parse_topology, resolve_topology_path
from testbed.services.catalog import Catalog, CatalogConfig
from testbed.util import wait_until

pytestmark = pytest.mark.mininet

DROP_HEARTBEATS = f"OUTPUT -p udp --dport {MCAST_CONTROL_PORT} -j DROP"
P = "hk"  # prefix of every switch and host name


def hk_mini() -> dict:
    """``mini`` with switches s1, s2 -> hk1, hk2 and every host h -> hk<h>."""
    data = yaml.safe_load(resolve_topology_path("mini").read_text())
    data["name"] = "hkmini"
    sw = {s["name"]: P + s["name"].lstrip("s") for s in data["switches"]}
    host = {h["name"]: P + h["name"] for h in data["hosts"]}
    for s in data["switches"]:
        s["name"] = sw[s["name"]]
    for ln in data["links"]:
        ln["a"], ln["b"] = sw[ln["a"]], sw[ln["b"]]
    for h in data["hosts"]:
        h["name"], h["switch"] = host[h["name"]], sw[h["switch"]]
    for a in data["anycast"]:
        a["members"] = [host[m] for m in a["members"]]
    for g in data["multicast"]:
        g["source"], g["members"] = host[g["source"]], [host[m] for m in g["members"]]
    return data


@pytest.fixture(scope="module")
def hk() -> Iterator[tuple[CdnNet, CdnServices]]:
    cn = CdnNet(parse_topology(hk_mini(), "hkmini"), BuildOptions(extra={"control": {"miss_limit": 3}}))
    try:
        cn.start()
        yield cn, start_services(cn, CdnOptions(multicast=True, roles=("origin", "edge")))
    finally:
        cn.stop()


def served_by(cn: CdnNet, client: str, ip: str, path: str) -> str | None:
    out = cn.host(client).cmd(f"curl -s -m 5 -D - -o /dev/null http://{ip}{path}")
    for line in out.splitlines():
        k, _, v = line.partition(":")
        if k.strip().lower() == "x-served-by":
            return v.strip()
    return None


def member(cn: CdnNet, name: str) -> dict:
    return cn.rest("/anycast")["services"]["http"]["members"][name]


def test_silenced_heartbeats_withdraw_the_edge_from_the_vip(hk) -> None:
    cn, svc = hk
    vip = cn.topo.anycast[0].vip
    path = next(o.path for o in Catalog(CatalogConfig()).objects if o.cls == "image")
    assert svc.mcast is cn.mcast  # one plan of the multicast sessions
    wait_until(
        lambda: all((member(cn, m).get("heartbeats") or 0) >= 3 for m in ("hke1", "hke2")),
        30,
        0.2,
        what="the controller hearing both edges' heartbeats",
    )
    snap = cn.rest("/anycast")
    print(json.dumps(snap["control"]))
    assert snap["control"]["keyed"] and snap["control"]["errors"] == {}
    assert member(cn, "hke2")["load"] is not None and member(cn, "hke2")["heartbeat_age_ms"] < 1500
    assert served_by(cn, "hkc1", vip, path) == "hke1" and served_by(cn, "hkc2", vip, path) == "hke2"
    # the copy to the controller leaves delivery to the group's members alone: hkorigin still hears both
    nodes_file = svc.start_control_listener("hkorigin")

    def origin_hears() -> bool:
        try:
            nodes = json.loads(nodes_file.read_text())
        except (OSError, ValueError):
            return False
        return all(nodes.get(m, {}).get("heartbeats", 0) >= 2 for m in ("hke1", "hke2"))

    wait_until(origin_hears, 20, 0.2, what="hkorigin (a control-group member) hearing both edges")
    cn.host("hke2").cmd(f"iptables -A {DROP_HEARTBEATS}")
    try:
        wait_until(
            lambda: member(cn, "hke2")["healthy"] is False, 20, 0.1, what="controller: hke2 silent -> out"
        )
        m = member(cn, "hke2")
        print(json.dumps(m))
        assert m["heartbeat_alive"] is False and m["alive"] is True  # probes fine, heartbeats gone
        assert cn.rest("/anycast")["services"]["http"]["choice"]["hk2"] == "hke1"
        wait_until(
            lambda: served_by(cn, "hkc2", vip, path) == "hke1", 20, 0.2, what="west client served by hke1"
        )
        assert served_by(cn, "hkc2", cn.ip("hke2"), path) == "hke2"  # its HTTP server still answers
    finally:
        cn.host("hke2").cmd(f"iptables -D {DROP_HEARTBEATS}")
    wait_until(lambda: member(cn, "hke2")["healthy"] is True, 20, 0.1, what="controller: hke2 back")
    wait_until(lambda: served_by(cn, "hkc2", vip, path) == "hke2", 20, 0.2, what="west client back on hke2")
    assert cn.rest("/anycast")["control"]["errors"] == {}
