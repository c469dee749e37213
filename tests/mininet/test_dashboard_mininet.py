"""The live dashboard on a running mini, in Debian's chromium: the page shows every host and switch; an
edge failed from the page turns failed on the page within 2 s and its clients' anycast catchment moves to
the other edge; recovered from the page, it comes back. A screenshot is saved with the test artifacts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser import chromium_available, headless_chromium, save_screenshot, wait_for

from testbed.net.launch import start_services
from testbed.web.server import Dashboard

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [pytest.mark.mininet, pytest.mark.slow]


def _js_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _client(name: str, method: str = "anycast") -> str:
    return (
        f"(window.cdnlab && window.cdnlab.lastState && "
        f"(window.cdnlab.lastState.clients.find(c => c.name === {_js_str(name)}) || {{}})[{_js_str(method)}])"
    )


def test_fail_an_edge_from_the_page_and_watch_clients_move(cdn_net) -> None:
    reason = chromium_available()
    if reason:
        pytest.skip(reason)
    cn = cdn_net("mini")
    start_services(cn)
    d = Dashboard(port=0)
    d.start()
    d.attach(cn)
    try:
        with headless_chromium() as drv:
            t0 = time.monotonic()
            drv.get(d.url)
            wait_for(drv, "window.cdnlab && window.cdnlab.cy && window.cdnlab.cy.nodes().length > 0", 10)
            print(f"first paint of the graph: {time.monotonic() - t0:.2f} s")
            shown = set(drv.execute_script("return window.cdnlab.cy.nodes().map(n => n.id())"))
            want = {s.name for s in cn.topo.switches} | {h.name for h in cn.topo.hosts}
            assert want <= shown, f"not on the page: {sorted(want - shown)}"
            # c2 sits on s2 with e2: anycast brings it to e2; DNS and redirect answers arrive too
            wait_for(drv, f"{_client('c2')} === 'e2'", 10)
            wait_for(drv, f"{_client('c1', 'dns')} && {_client('c1', 'redirect')}", 10)
            health = "#edge-row-e2 .health"
            wait_for(drv, f"document.querySelector({_js_str(health)}).textContent.includes('up')", 5)

            drv.find_element("css selector", '#edge-row-e2 button[data-action="fail"]').click()
            t_click = time.monotonic()
            wait_for(drv, f"document.querySelector({_js_str(health)}).textContent.includes('failed')", 2.0)
            seen_failed = time.monotonic() - t_click
            print(f"edge e2 failed on the page {seen_failed:.2f} s after the click")
            assert seen_failed <= 2.0
            assert cn.services.failed == {"e2": "process"}
            assert cn.services.service_process("e2") is None  # really killed, by the services' own path
            # the controller notices and moves s2's clients to e1 (its liveness probe: a few seconds)
            wait_for(drv, f"{_client('c2')} === 'e1'", 20)
            wait_for(
                drv, "window.cdnlab.events.some(e => (e.text || '').includes('c2: anycast e2 -> e1'))", 5
            )
            ARTIFACTS.mkdir(exist_ok=True)
            shot = save_screenshot(drv, ARTIFACTS / "dashboard-mini-e2-failed.png")
            assert shot.stat().st_size > 10_000

            drv.find_element("css selector", '#edge-row-e2 button[data-action="recover"]').click()
            wait_for(drv, f"document.querySelector({_js_str(health)}).textContent.includes('up')", 30)
            wait_for(drv, f"{_client('c2')} === 'e2'", 20)
            assert cn.services.failed == {}
    finally:
        d.stop()


def test_up_no_cli_web_keeps_the_network_until_sigterm(tmp_path) -> None:
    """`cdnlab up mini --no-cli --web` (a lecture's projector, no terminal): the network and the dashboard
    stay up without a CLI until SIGTERM, then everything stops cleanly."""
    import json
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    from testbed.util import StopWaiting, wait_until

    out = tmp_path / "up.out"
    with open(out, "w") as f:
        p = subprocess.Popen([sys.executable, "-m", "testbed.cli", "up", "mini", "--no-cli", "--web", "0",
                              "--run-dir", str(tmp_path / "run")], stdout=f, stderr=subprocess.STDOUT)
    try:
        def url() -> str | None:
            if p.poll() is not None:
                raise StopWaiting(f"cdnlab up exited ({p.returncode}): {out.read_text()[-2000:]}")
            m = re.search(r"dashboard on (http://127\.0\.0\.1:\d+/)", out.read_text())
            return m.group(1) if m else None

        base = wait_until(url, 120, 0.2, what="the dashboard's URL")
        assert "stays up until SIGTERM or Ctrl-C" in out.read_text()
        snap = json.loads(urllib.request.urlopen(base + "api/state", timeout=5).read())
        assert snap["topology"]["name"] == "mini" and snap["topology"]["actions"] is True
        assert p.poll() is None  # no CLI, and still up
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 143
        text = out.read_text()
        assert "nothing of this run is left" in text, text[-1500:]
        try:
            urllib.request.urlopen(base + "api/state", timeout=2)
            raise AssertionError("the dashboard still answers after the network stopped")
        except OSError:
            pass
        bridges = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split()
        assert not {"s1", "s2"} & set(bridges), bridges
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
