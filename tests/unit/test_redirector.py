"""HTTP redirector: 302 to the chosen edge by client address, health-aware, robust to bad requests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiohttp
import pytest
import yaml
from cdn_dns_fixtures import REGIONS, StandInEdge

from contract.config import validate
from testbed.services.redirector import Redirector, RedirectorConfig
from testbed.util import async_wait_until, free_port, wait_tcp


@pytest.fixture
async def edges():
    es = [await StandInEdge(n).start() for n in ("eu1", "eu2", "us1")]
    yield {e.name: e for e in es}
    for e in es:
        await e.stop()


def cfg_dict(edges, **kw) -> dict:
    specs = [edges["eu1"].spec("eu"), edges["eu2"].spec("eu"), edges["us1"].spec("us")]
    for s in specs:  # redirect URLs use the host name, probes go to 127.0.0.1:port
        s["host"] = s["name"] + ".edges.cdnlab.net"
    d = {
        "name": "redir",
        "port": 0,
        "mapping": {"regions": REGIONS, "default_region": "eu", "edges": specs},
        # a probe answered within 0.5 s is up: the warm-up round decides the first answers, and a loaded
        # machine (the CI's unit tier runs after the Mininet tier) can delay a loopback answer past 0.15 s
        "health": {"interval": 0.5, "timeout": 0.5, "fall": 2, "rise": 2},
    }
    d.update(kw)
    return d


@pytest.fixture
async def redir(edges):
    r = Redirector(validate(RedirectorConfig, cfg_dict(edges), "test"))
    await r.start()
    yield r
    await r.stop()


async def get(r: Redirector, path: str, source: str = "127.0.0.1") -> aiohttp.ClientResponse:
    conn = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=conn) as s:
        async with s.get(f"http://127.0.0.1:{r.port}{path}", allow_redirects=False) as resp:
            await resp.read()
            return resp


def edge_name(resp) -> str:
    return resp.headers["Location"].split("//", 1)[1].split(".", 1)[0]


async def test_redirects_to_region_edge_keeping_path_and_query(redir, edges):
    r = await get(redir, "/customer.example/img/x.gif?v=2")
    assert r.status == 302 and r.headers["Cache-Control"] == "no-store"
    loc = r.headers["Location"]
    name = edge_name(r)
    assert name in ("eu1", "eu2")
    assert loc == f"http://{name}.edges.cdnlab.net:{edges[name].port}/customer.example/img/x.gif?v=2"
    assert {edge_name(await get(redir, "/customer.example/img/x.gif?v=3")) for _ in range(3)} == {name}
    spread = {edge_name(await get(redir, f"/o/{i}")) for i in range(30)}
    assert spread == {"eu1", "eu2"}
    r_us = await get(redir, "/customer.example/img/x.gif", source="127.2.0.5")
    assert edge_name(r_us) == "us1" and r_us.headers["X-Cdn-Region"] == "us"


async def test_dead_edge_excluded_then_503_when_all_dead(redir, edges):
    await edges["us1"].stop()

    async def moved() -> bool:
        return edge_name(await get(redir, "/a", source="127.2.0.5")) != "us1"

    await async_wait_until(moved, timeout=5, what="us1 excluded from redirects")
    await edges["eu1"].stop()
    await edges["eu2"].stop()

    async def unavailable() -> bool:
        return (await get(redir, "/a")).status == 503

    await async_wait_until(unavailable, timeout=5, what="503 with no live edge")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{redir.port}/_redirector/stats") as resp:
            st = await resp.json()
    assert st["no_live_edge"] >= 1 and st["redirects"] >= 1 and st["edges"]["us1"]["up"] is False


async def test_bad_request_line_then_still_serving(redir):
    for junk in (b"GARBAGE\r\n\r\n", b"GET /\x00\x01 HTTP/9.9\r\n\r\n", b"\xff\xfe\xfd" * 100 + b"\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", redir.port)
        writer.write(junk)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(1000), 5)
        writer.close()
        assert data == b"" or b" 400 Bad Request" in data.split(b"\r\n")[0]
    r = await get(redir, "/after")
    assert r.status == 302


def test_service_main_and_bad_config(tmp_path):
    port = free_port()
    d = {
        "name": "redir",
        "port": port,
        "log_file": str(tmp_path / "r.log"),
        "health": {"enabled": False},
        "mapping": {"regions": REGIONS, "edges": [{"name": "e1", "address": "10.0.0.1", "region": "eu"}]},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(d))
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    p = subprocess.Popen(
        [sys.executable, "-m", "testbed.services.redirector", "--config", str(tmp_path / "r.yaml")], env=env
    )
    try:
        wait_tcp("127.0.0.1", port, 10)
        out = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
                f"http://127.0.0.1:{port}/x?y=1",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert out.stdout == "302 http://10.0.0.1:80/x?y=1"
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    d["hash_on"] = "cookie"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(d))
    bad = subprocess.run(
        [sys.executable, "-m", "testbed.services.redirector", "--config", str(tmp_path / "bad.yaml")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and f"{tmp_path / 'bad.yaml'}: hash_on" in bad.stderr
