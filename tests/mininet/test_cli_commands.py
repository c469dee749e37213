"""CDN commands in the Mininet CLI, driven in batch mode on mini."""

from __future__ import annotations

import re

import pytest

from testbed.net.cli_cmds import CdnCLI
from testbed.net.launch import start_services

pytestmark = pytest.mark.mininet


def test_cdn_commands(cdn_net, tmp_path, capsys) -> None:
    cn = cdn_net("mini")
    start_services(cn)
    script = tmp_path / "cmds"
    script.write_text("\n".join([
        "help",
        "cdn",
        "cdn --json",
        "fetch c1 /img/img0001.jpg --via anycast",
        "fetch c1 img/img0004.jpg",  # no leading slash: corrected, with a note
        "fetch c1 /no/such/object.jpg",
        "dig c1 nonexist.customer.example",
        "fetch c2 /img/img0001.jpg --via dns",
        "fetch c2 /img/img0001.jpg --via redirect",
        "dig c1",
        "fail e1",
        "cdn",
        "recover e1",
        "capture c1 s1 0.5",
        "rtt c1 e2",
        "fetch nobody /x",
        "fail e1 sideways",
        "fail c2",  # a client runs no service: refused, naming what works
        "fail redir",
        "fetch c1 /img/img0001.jpg --via redirect",
        "fail e2 host",
        "fetch c2 http://10.0.0.3/img/img0001.jpg",
        "recover e2",
        "recover redir",
        "recover c2",
        "c0 ping -c1 10.0.0.1",  # Mininet's controller node: the machine's root namespace
        "fetch s1 /img/img0001.jpg",  # a switch: also the root namespace
        "rtt c0 e1",
    ]) + "\n")
    with open(script) as stdin:  # pytest's stdin has no fileno; Mininet's CLI polls its stdin
        CdnCLI(cn, script=str(script), stdin=stdin)
    out = capsys.readouterr().out
    assert "CDN commands" in out.split("Mininet's commands")[0] and "fetch CLIENT PATH_OR_URL" in out
    table = out.split("mini: edges")[1].split("anycast http")[0]
    for col in ("health", "catchment", "requests", "hit ratio", "cache"):
        assert col in table, col
    assert re.search(r"e1 .*10\.0\.0\.2 .*east .*up .*s1 ", table), table
    assert '"edges": [' in out and '"catchment": [' in out  # cdn --json
    assert "anycast http 10.0.0.200:80" in out
    # fetch measures every phase the experiments measure, and says why a fetch failed
    assert re.search(r"dns \d+\.\d ms  connect \d+\.\d ms  redirect \d+\.\d ms  first byte \d+\.\d ms  total", out)
    assert "HTTP 200" in out and "X-Cache:" in out
    assert "note: paths start with '/': fetching /img/img0004.jpg" in out
    assert "HTTP 404" in out and "*** failed: HTTP 404 from e1: no such object" in out
    assert "no answer: NXDOMAIN (the name does not exist)" in out
    assert "*** failed: connect: the redirector 10.0.0.8:80 refused the connection" in out
    assert "*** failed: connect: no answer from the server 10.0.0.3:80 within 5 s (timeout)" in out
    assert "X-Served-By: e1" in out  # c1's anycast edge
    assert "X-Served-By: e2" in out  # c2's redirect edge (the redirector maps c2's own address)
    assert "a73.g.cdnlab.net" in out  # the CNAME chain
    assert "e1 (edge): process failure injected" in out and "e1: recovered" in out
    assert "process" in out.split("e1 (edge): process failure injected")[1].split("recover")[0]  # cdn: failed
    assert "c2 is a client and runs no CDN service process" in out
    assert "redir (redirector): process failure injected" in out and "redirect fetches fail" in out
    assert "redir: recovered" in out and "c2 is not failed" in out
    assert "packets captured; saved" in out and ".pcap" in out
    assert "configured path 24 ms" in out
    assert "no host named 'nobody'" in out
    assert "unknown failure kind" in out
    assert "c0 is the SDN controller's node in the machine's root namespace, not an emulated host" in out
    assert "'s1' is not an emulated host" in out and "'c0' is not an emulated host" in out
    assert "c0 -> e1" not in out and "PING" not in out  # nothing ran in the root namespace


def test_cdnlab_up_interactive_session_and_exit() -> None:
    """`cdnlab up` end to end: build, services, an interactive CLI fed on stdin, a clean exit."""
    import subprocess
    import sys
    from pathlib import Path

    from testbed.net.host_env import run

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "up", "mini"], cwd=root, capture_output=True,
                       text=True, input="cdn\nc1 curl -s -o /dev/null -w 'code=%{http_code}' http://10.0.0.200/img/img0001.jpg\n"
                       "exit\n", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "mini is up" in r.stdout
    assert "hit ratio" in r.stdout and "e1" in r.stdout  # the cdn command's table
    assert "code=200" in r.stdout + r.stderr  # a plain Mininet command's output is shown (Mininet logs it)
    assert "cdnlab: stopping mini: " in r.stdout and "switches" in r.stdout  # exit says what it stops
    assert "cdnlab: stopped in" in r.stdout
    assert not {"s1", "s2"} & set(run(["ovs-vsctl", "list-br"]).stdout.split())  # torn down


def _code(cn, host: str, args: str) -> str:
    """The HTTP status a curl from inside ``host`` gets (``000``: no answer)."""
    return cn.host(host).cmd(f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' {args}").strip()[-3:]


def test_only_the_operator_may_purge(cdn_net, tmp_path, capsys) -> None:
    """#16: a client host's purge and stats are refused; the CLI's `purge` and `stats` work."""
    cn = cdn_net("mini")
    svc = start_services(cn)
    e1, origin, obj = cn.ip("e1"), cn.ip("origin"), "/img/img0001.jpg"
    fetch = f"http://{e1}{obj}"
    assert _code(cn, "c1", fetch) == "200"
    assert "X-Cache: HIT" in cn.host("c1").cmd(f"curl -s -m 5 -D - -o /dev/null {fetch}")
    stolen = "-H 'Authorization: Bearer 0123456789abcdef0123456789abcdef'"
    for args in (f"-X PURGE {fetch}", f"-X POST --data '{{\"paths\": [\"{obj}\"]}}' http://{e1}/_cdn/purge",
                 f"http://{e1}/_cdn/stats", f"{stolen} -X PURGE {fetch}",
                 f"-X POST --data '{{\"status\": 503}}' http://{origin}/_origin/fault",
                 f"-X POST http://{origin}/_origin/update{obj}", f"http://{cn.ip('redir')}/_redirector/stats"):
        assert _code(cn, "c1", args) == "403", args
    assert _code(cn, "c1", f"http://{e1}/_cdn/health") == "200"  # probes stay open
    assert "X-Cache: HIT" in cn.host("c1").cmd(f"curl -s -m 5 -D - -o /dev/null {fetch}")  # nothing purged
    assert _code(cn, "c1", f"http://{origin}{obj}") == "200"  # no fault was injected
    assert svc.service_stats("e1")["control_refused"] == 4

    script = tmp_path / "cmds"
    script.write_text("\n".join([
        "purge /img/img0001.jpg", "stats e1", "stats c1", "purge img0001.jpg", "purge /img/img0001.jpg e9",
        "purge /img/img0001.jpg e1",
    ]) + "\n")
    with open(script) as stdin:
        CdnCLI(cn, script=str(script), stdin=stdin)
    out = capsys.readouterr().out
    assert "e1: purged /img/img0001.jpg" in out
    assert '"control_refused": 4' in out  # stats e1, as JSON
    assert "c1 is a client: only edges, the origin and redirectors have stats" in out
    assert "'img0001.jpg' is not a path" in out
    assert "e9 is not an edge" in out
    assert "e1: not cached /img/img0001.jpg" in out  # the second purge: already gone
    assert "X-Cache: MISS" in cn.host("c1").cmd(f"curl -s -m 5 -D - -o /dev/null {fetch}")
