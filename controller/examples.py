"""Small example network views, used by the tests, the failover benchmark and for trying the controller.

Names use the ``hc``/``hch`` prefixes so that Mininet networks built from them do not collide with other
networks on the same machine.
"""

from __future__ import annotations

import random

from contract.netview import NetView


def _mac(i: int) -> str:
    return f"02:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}"


def triangle(rest_port: int = 8080, mode: str = "destination") -> NetView:
    """Three switches in a cycle; clients hch1..3 (one per switch), anycast members hch4 (hc1), hch5 (hc3).

    Delays: hc1-hc2 5 ms, hc2-hc3 5 ms, hc3-hc1 12 ms; member access delays hch4 2 ms, hch5 1 ms, so the
    nearest member is hch4 from hc1 and hch5 from hc2 and hc3.
    """
    hosts = [
        {"name": "hch1", "mac": _mac(1), "ip": "10.0.0.1", "switch": "hc1", "port": 3, "delay_ms": 1},
        {"name": "hch2", "mac": _mac(2), "ip": "10.0.0.2", "switch": "hc2", "port": 3, "delay_ms": 1},
        {"name": "hch3", "mac": _mac(3), "ip": "10.0.0.3", "switch": "hc3", "port": 3, "delay_ms": 1},
        {"name": "hch4", "mac": _mac(4), "ip": "10.0.0.4", "switch": "hc1", "port": 4, "delay_ms": 2},
        {"name": "hch5", "mac": _mac(5), "ip": "10.0.0.5", "switch": "hc3", "port": 4, "delay_ms": 1},
    ]
    return NetView.model_validate(
        {
            "switches": [{"name": f"hc{i}", "dpid": 0xC0 + i} for i in (1, 2, 3)],
            "links": [
                {"a": "hc1", "a_port": 1, "b": "hc2", "b_port": 1, "delay_ms": 5, "bw_mbit": None},
                {"a": "hc2", "a_port": 2, "b": "hc3", "b_port": 1, "delay_ms": 5, "bw_mbit": None},
                {"a": "hc3", "a_port": 2, "b": "hc1", "b_port": 2, "delay_ms": 12, "bw_mbit": None},
            ],
            "hosts": hosts,
            "anycast": [
                {
                    "name": "web",
                    "vip": "10.0.0.100",
                    "vmac": "02:cd:1a:00:01:00",
                    "port": 80,
                    "members": ["hch4", "hch5"],
                }
            ],
            "anycast_mode": mode,
            "multicast_static": [{"group": "239.1.1.1", "source": "hch1", "members": ["hch3"]}],
            "rest_port": rest_port,
        }
    )


def random_view(seed: int, n_switches: int = 7, extra_links: int = 5, hosts_per_switch: int = 2) -> NetView:
    """A random connected graph (a random tree plus extra links, so it has cycles) with random delays."""
    rng = random.Random(seed)
    names = [f"hc{i + 1}" for i in range(n_switches)]
    next_port = dict.fromkeys(names, 1)
    links: list[dict] = []
    pairs: set[frozenset[str]] = set()

    def link(a: str, b: str) -> None:
        pairs.add(frozenset((a, b)))
        links.append(
            {
                "a": a,
                "a_port": next_port[a],
                "b": b,
                "b_port": next_port[b],
                "delay_ms": rng.choice([1, 2, 3, 5, 8, 13]),
                "bw_mbit": None,
            }
        )
        next_port[a] += 1
        next_port[b] += 1

    for i in range(1, n_switches):
        link(names[i], names[rng.randrange(i)])
    for _ in range(extra_links):
        a, b = rng.sample(names, 2)
        if frozenset((a, b)) not in pairs:
            link(a, b)
    hosts = []
    k = 0
    for s in names:
        for _ in range(hosts_per_switch):
            k += 1
            hosts.append(
                {
                    "name": f"hch{k}",
                    "mac": _mac(k),
                    "ip": f"10.0.1.{k}",
                    "switch": s,
                    "port": next_port[s],
                    "delay_ms": rng.choice([0.5, 1, 2]),
                }
            )
            next_port[s] += 1
    members = [h["name"] for h in rng.sample(hosts, 3)]
    return NetView.model_validate(
        {
            "switches": [{"name": s, "dpid": 0x100 + i} for i, s in enumerate(names)],
            "links": links,
            "hosts": hosts,
            "anycast": [
                {
                    "name": "cdn",
                    "vip": "10.0.1.200",
                    "vmac": "02:cd:1a:00:02:00",
                    "port": 80,
                    "members": members,
                }
            ],
            "multicast_static": [],
        }
    )


def renamed(view: NetView, switch_prefix: str, dpid_base: int, number_offset: int = 0) -> NetView:
    """``view`` with every switch ``hcN`` renamed ``{switch_prefix}{N + number_offset}`` (dpid
    ``dpid_base + N + number_offset``) and every host ``hchN`` renamed ``{switch_prefix}h{N + number_offset}``.

    Lets several tests (or helpers) build the same example network side by side on one machine, since OVS
    bridge and interface names are global. Raises ValueError for a name not in the ``hc``/``hch`` scheme.
    """

    def sw(name: str) -> str:
        if not (name.startswith("hc") and name[2:].isdigit()):
            raise ValueError(f"switch name {name!r} is not hc<N>")
        return f"{switch_prefix}{int(name[2:]) + number_offset}"

    def host(name: str) -> str:
        if not (name.startswith("hch") and name[3:].isdigit()):
            raise ValueError(f"host name {name!r} is not hch<N>")
        return f"{switch_prefix}h{int(name[3:]) + number_offset}"

    d = view.model_dump(mode="json")
    for s in d["switches"]:
        s["dpid"] = dpid_base + int(s["name"][2:]) + number_offset
        s["name"] = sw(s["name"])
    for lk in d["links"]:
        lk["a"], lk["b"] = sw(lk["a"]), sw(lk["b"])
    for h in d["hosts"]:
        h["name"], h["switch"] = host(h["name"]), sw(h["switch"])
    for a in d["anycast"]:
        a["members"] = [host(m) for m in a["members"]]
    for g in d["multicast_static"]:
        g["source"], g["members"] = host(g["source"]), [host(m) for m in g["members"]]
    return NetView.model_validate(d)
