"""The launcher and REST API in a real controller process (no switches connected; loopback only)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from controller.examples import triangle
from testbed.util import free_port, wait_tcp


def test_bad_view_exits_2_naming_field(tmp_path: Path) -> None:
    data = triangle().model_dump(mode="json")
    data["anycast"][0]["members"] = ["ghost"]
    p = tmp_path / "v.json"
    p.write_text(json.dumps(data))
    r = subprocess.run(
        [sys.executable, "-m", "controller", "--view", str(p)], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2
    assert f"{p}" in r.stderr and "unknown host 'ghost'" in r.stderr


def test_a_controller_waits_for_its_view_and_gives_up_naming_it(tmp_path: Path) -> None:
    """``--view-wait``: the builder starts the controller before the view exists; it serves once the view
    appears, and exits 2 naming the file when none does."""
    missing = tmp_path / "never.json"
    r = subprocess.run([sys.executable, "-m", "controller", "--view", str(missing), "--view-wait", "0.3"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"{missing}: no view appeared within 0.3 s" in r.stderr
    rest = free_port()
    late = tmp_path / "late.json"
    proc = subprocess.Popen([sys.executable, "-m", "controller", "--view", str(late), "--view-wait", "60",
                             "--of-port", str(free_port()), "--no-lldp", "--log", str(tmp_path / "ctl.log")])
    try:
        tmp = tmp_path / "late.tmp"
        tmp.write_text(json.dumps(triangle(rest_port=rest).model_dump(mode="json")))
        assert proc.poll() is None  # still waiting, not failed
        tmp.replace(late)
        wait_tcp("127.0.0.1", rest, timeout=30)
        assert _call(rest, "/topology")[0] == 200
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def _call(port: int, path: str, body: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method="GET" if body is None else "POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("rest")
    rest = free_port()
    p = tmp / "v.json"
    p.write_text(json.dumps(triangle(rest_port=rest).model_dump(mode="json")))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller",
            "--view",
            str(p),
            "--of-port",
            str(free_port()),
            "--log",
            str(tmp / "ctl.log"),
            "--no-lldp",
        ]
    )
    try:
        wait_tcp("127.0.0.1", rest, timeout=20)
        yield rest
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_rest_reads(ctl: int) -> None:
    code, topo = _call(ctl, "/topology")
    assert code == 200 and [s["name"] for s in topo["switches"]] == ["hc1", "hc2", "hc3"]
    assert not any(s["connected"] for s in topo["switches"])
    code, any_ = _call(ctl, "/anycast")
    assert any_["mode"] == "destination" and set(any_["services"]["web"]["members"]) == {"hch4", "hch5"}
    # nothing is probed while no switch is connected, so members keep their initial (alive) state
    assert all(m["alive"] for m in any_["services"]["web"]["members"].values())
    code, mc = _call(ctl, "/multicast")
    assert code == 200 and mc["groups"]["239.1.1.1"]["static"][0]["source"] == "hch1"


def test_rest_commands_and_errors(ctl: int) -> None:
    code, r = _call(ctl, "/anycast/web/drain/hch4", b"")
    assert code == 200 and r["choice"]["hc1"] == "hch5"
    code, r = _call(ctl, "/anycast/web/restore/hch4", b"")
    assert code == 200 and r["choice"]["hc1"] == "hch4"
    assert _call(ctl, "/anycast/web/drain/hch1", b"")[0] == 404
    assert _call(ctl, "/anycast/nope/drain/hch4", b"")[0] == 404
    assert _call(ctl, "/anycast/mode", b"{bad json")[0] == 400
    code, r = _call(ctl, "/anycast/mode", b'{"mode": "nearest"}')
    assert code == 400 and "mode must be" in r["error"]
    assert _call(ctl, "/anycast/mode", b'{"mode": "affinity", "x": 1}')[0] == 400
    assert _call(ctl, "/anycast/mode", b'{"mode": "affinity"}') == (200, {"mode": "affinity"})
    assert _call(ctl, "/anycast")[1]["mode"] == "affinity"
    assert _call(ctl, "/anycast/mode", b'{"mode": "destination"}')[0] == 200
    assert _call(ctl, "/topology")[0] == 200  # still serving after bad requests
