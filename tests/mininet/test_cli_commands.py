"""CDN commands in the Mininet CLI, driven in batch mode on mini."""

from __future__ import annotations

import pytest

from testbed.net.cdn import start_services
from testbed.net.cli_cmds import CdnCLI

pytestmark = pytest.mark.mininet


def test_cdn_commands(cdn_net, tmp_path, capsys) -> None:
    cn = cdn_net("mini")
    start_services(cn)
    script = tmp_path / "cmds"
    script.write_text("\n".join([
        "cdn",
        "fetch c1 /img/img0001.jpg --via anycast",
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
    ]) + "\n")
    with open(script) as stdin:  # pytest's stdin has no fileno; Mininet's CLI polls its stdin
        CdnCLI(cn, script=str(script), stdin=stdin)
    out = capsys.readouterr().out
    assert "edge e1" in out and "anycast http 10.0.0.200:80" in out
    assert "X-Served-By: e1" in out  # c1's anycast edge
    assert "X-Served-By: e2" in out  # c2's redirect edge (its DNS answer maps by mini's one resolver, east)
    assert "a73.g.cdnlab.net" in out  # the CNAME chain
    assert "e1: process failure injected" in out and "e1: recovered" in out
    assert "process" in out.split("e1: process failure injected")[1].split("recover")[0]  # cdn shows it failed
    assert "packets captured; saved" in out and ".pcap" in out
    assert "configured path 24 ms" in out
    assert "no host named 'nobody'" in out
    assert "unknown failure kind" in out
