"""Video through the emulated CDN: the headless DASH player in client hosts, by each selection method.

The origin serves the DASH titles of :mod:`testbed.services.video`; the player
(:mod:`testbed.measure.player`) runs in a client's own namespace and fetches through the edges.
"""

from __future__ import annotations

import csv as csvlib
import json
import re
import shlex
import sys
import time
from pathlib import Path

import pytest

from testbed.net.cli_cmds import CdnCLI
from testbed.net.launch import start_services

pytestmark = pytest.mark.mininet


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as fh:
        return list(csvlib.DictReader(fh))


def test_play_by_every_method(cdn_net, tmp_path, capsys) -> None:
    cn = cdn_net("mini")
    start_services(cn)
    script = tmp_path / "cmds"
    script.write_text(
        "\n".join(
            [
                "play c1 --duration 10",
                "play c2 --via dns --policy bba --duration 10",
                "play c2 testcard-live --via redirect --policy mpc --duration 6",
                "play c1 nosuchtitle",
                "play c1 --via sideways",
                "play c1 --duration soon",
            ]
        )
        + "\n"
    )
    with open(script) as stdin:
        CdnCLI(cn, script=str(script), stdin=stdin)
    out = capsys.readouterr().out
    runs = re.findall(r"(\d+) segments: startup ([\d.]+) s, (\d+) stalls .*\nserved by (.*)", out)
    assert len(runs) == 3, out
    assert [int(n) for n, *_ in runs] == [5, 5, 3]
    assert all(stalls == "0" for _, _, stalls, _ in runs), out  # nothing fails: no stall
    assert runs[0][3].startswith("e1 ")  # c1's anycast edge
    assert runs[1][3].startswith("e1 ")  # DNS maps c2 by its resolver, which is in the east (e1's region)
    assert runs[2][3].startswith("e2 ")  # the redirector maps c2's own address: the west's edge
    assert (
        "*** manifest: HTTP 404 from 10.0.0.200" in out
    )  # through the VIP: the edge relays the origin's 404
    assert "*** usage: play CLIENT" in out
    assert "*** --duration takes seconds of video, not 'soon'" in out


def test_an_anycast_stream_survives_its_edge_failing(cdn_net, tmp_path) -> None:
    """The player keeps its stream when its edge dies: the VIP's next request reaches another edge."""
    cn = cdn_net("mini")
    svc = start_services(cn)
    c1 = cn.net["c1"]
    vip = cn.topo.anycast[0].vip
    csv = tmp_path / "segments.csv"
    proc = c1.popen(
        shlex.join(
            [
                sys.executable,
                "-m",
                "testbed.measure.player",
                "/dash/testcard/manifest.mpd",
                "--vip",
                vip,
                "--duration",
                "24",
                "--max-buffer",
                "6",
                "--csv",
                str(csv),
                "--json",
            ]
        )
    )
    try:
        deadline = time.monotonic() + 30
        while len(_rows(csv)) < 4:  # under way, its 6 s buffer full (the log is written as segments come in)
            assert proc.poll() is None and time.monotonic() < deadline, "the player did not get 4 segments"
            time.sleep(0.1)
        svc.fail("e1")
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    r = json.loads(out.decode().strip().splitlines()[-1])
    assert r["error"] == "", (r, err.decode()[-2000:])
    assert r["segments"] == 12
    assert set(r["servers"]) == {"e1", "e2"}, r["servers"]
    # anycast reroutes within the controller's liveness probes, well inside the 6 s buffer: no stall
    assert r["rebuffer_count"] == 0, r
    assert all(f["ip"] == vip for f in r["failures"])  # any retry went to the VIP, never elsewhere
    served = [row["server"] for row in _rows(csv)]
    assert served[0] == "e1" and served[-1] == "e2"
    assert served.index("e2") == len(served) - served[::-1].index("e1")  # one switch, no flapping
