"""The live dashboard's page (testbed/web/static) in headless Chromium against a fake dashboard server.

The messages are built with the contract's models (contract/dashboard.py), so what the page is shown is
what the real server may send; the actions the page posts are checked on the fake server.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser import chromium_available, headless_chromium, save_screenshot, wait_for
from fake_dashboard import FakeDashboard

from contract.dashboard import (
    ClientState,
    EdgeState,
    ExperimentState,
    LinkInfo,
    NodeView,
    StateMsg,
    TimelineEvent,
    TopologyMsg,
)

_MISSING = chromium_available()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

TOKEN = "tok-3f9a<&>"  # characters the server must escape when it fills in the page
TITLE = "cdnlab <test> & page"

TOPOLOGY = TopologyMsg(
    name="two-cities",
    geo=True,
    nodes=[
        NodeView(id="s_west", kind="switch", region="na", lat=40.71, lon=-74.01),
        NodeView(id="s_east", kind="switch", region="eu", lat=51.51, lon=-0.13),
        NodeView(id="origin", kind="host", role="origin", region="na", ip="10.0.1.2", switch="s_west"),
        NodeView(id="e1", kind="host", role="edge", region="na", ip="10.0.1.3", switch="s_west"),
        NodeView(id="e2", kind="host", role="edge", region="eu", ip="10.0.2.3", switch="s_east"),
        NodeView(id="c1", kind="host", role="client", region="na", ip="10.0.1.10", switch="s_west"),
        NodeView(id="c2", kind="host", role="client", region="eu", ip="10.0.2.10", switch="s_east"),
    ],
    links=[
        LinkInfo(id="s_west|s_east", a="s_west", b="s_east", delay_ms=36, bw_mbit=100),
        LinkInfo(id="origin|s_west", a="origin", b="s_west", delay_ms=2),
        LinkInfo(id="e1|s_west", a="e1", b="s_west", delay_ms=1),
        LinkInfo(id="e2|s_east", a="e2", b="s_east", delay_ms=1),
        LinkInfo(id="c1|s_west", a="c1", b="s_west", delay_ms=3),
        LinkInfo(id="c2|s_east", a="c2", b="s_east", delay_ms=3),
    ],
    anycast=["http"],
    methods=["anycast", "dns", "redirect"],
)

CLIENTS = [
    ClientState(name="c1", region="na", anycast="e1", dns="e2", redirect="e1", dns_ttl=20),
    ClientState(
        name="c2",
        region="eu",
        anycast="e2",
        dns=None,
        redirect="e2",
        errors={"dns": "SERVFAIL from the resolver"},
    ),
]

_seq = itertools.count(1)


def state(
    *,
    e2: str = "up",
    links_down: tuple[str, ...] = (),
    experiment: ExperimentState | None = None,
    clients: list[ClientState] = CLIENTS,
) -> StateMsg:
    return StateMsg(
        seq=next(_seq),
        time=time.time(),
        links_down=list(links_down),
        edges=[
            EdgeState(
                name="e1",
                health="up",
                requests=1200,
                rps=12.5,
                hit_ratio=0.85,
                bytes_served=3 * 1024 * 1024,
                cache_bytes=512 * 1024,
                load=0.4,
                catchment=["s_west"],
            ),
            EdgeState(
                name="e2",
                health=e2,
                failed="process" if e2 == "failed" else None,
                requests=300,
                rps=0.0 if e2 == "failed" else 4.0,
                hit_ratio=0.5,
                bytes_served=1024,
                catchment=["s_east"],
            ),
        ],
        clients=clients,
        experiment=experiment,
    )


@dataclass
class Page:
    driver: Any
    fake: FakeDashboard

    def js(self, script: str) -> Any:
        return self.driver.execute_script(script)

    def wait(self, condition: str, timeout: float = 5.0) -> Any:
        return wait_for(self.driver, condition, timeout)

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)


@pytest.fixture(scope="module")
def page():
    with FakeDashboard(token=TOKEN, title=TITLE) as fake, headless_chromium() as driver:
        fake.send("topology", TOPOLOGY)
        fake.send("state", state())
        driver.get(fake.url + "/")
        wait_for(driver, "window.cdnlab && cdnlab.cy && cdnlab.cy.nodes().length > 0 && cdnlab.lastState", 15)
        yield Page(driver, fake)


def _serves(p: Page) -> dict[str, str]:
    return p.js(
        "return Object.fromEntries(cdnlab.cy.edges('.serves').map(e => [e.source().id(), e.target().id()]))"
    )


def test_page_is_served_with_token_and_title(page: Page) -> None:
    assert page.driver.title == TITLE
    assert page.js("return document.querySelector('meta[name=\"cdnlab-token\"]').content") == TOKEN
    assert page.js("return document.getElementById('title').textContent") == TITLE
    page.wait("document.getElementById('conn').dataset.state === 'live'")


def test_every_node_and_link_is_in_the_graph(page: Page) -> None:
    ids = page.js("return cdnlab.cy.nodes().map(n => n.id())")
    assert sorted(ids) == sorted(n.id for n in TOPOLOGY.nodes)
    assert len(ids) == 7
    links = page.js("return cdnlab.cy.edges('.link').map(e => [e.id(), e.source().id(), e.target().id()])")
    assert sorted(map(tuple, links)) == sorted((lk.id, lk.a, lk.b) for lk in TOPOLOGY.links)
    switches = page.js("return cdnlab.cy.nodes('.switch').map(n => n.id())")
    assert sorted(switches) == ["s_east", "s_west"]
    assert page.js("return cdnlab.cy.getElementById('e1').hasClass('role-edge')")
    assert page.js("return cdnlab.cy.getElementById('c1').hasClass('role-client')")
    assert page.js("return cdnlab.cy.getElementById('s_west').style('shape')") == "round-rectangle"
    assert page.js("return cdnlab.cy.getElementById('c1').style('shape')") == "ellipse"
    assert page.js("return window.cdnlab.lastTopology.name") == "two-cities"


def test_geo_layout_puts_the_east_to_the_right_and_hosts_beside_their_switch(page: Page) -> None:
    assert page.js("return cdnlab.layout") == "geo"
    pos = page.js("return Object.fromEntries(cdnlab.cy.nodes().map(n => [n.id(), n.position()]))")
    assert pos["s_east"]["x"] > pos["s_west"]["x"]  # larger longitude
    assert pos["s_east"]["y"] < pos["s_west"]["y"]  # larger latitude: higher on the map

    def dist(a: str, b: str) -> float:
        return ((pos[a]["x"] - pos[b]["x"]) ** 2 + (pos[a]["y"] - pos[b]["y"]) ** 2) ** 0.5

    for n in TOPOLOGY.nodes:
        if n.kind == "host":
            other = "s_east" if n.switch == "s_west" else "s_west"
            assert dist(n.id, n.switch) < dist(n.id, other), n.id
    # a switch's hosts sit on one circle, whose radius grows with their number (3 on s_west, 2 on s_east)
    west = [round(dist(h, "s_west"), 3) for h in ("origin", "e1", "c1")]
    east = [round(dist(h, "s_east"), 3) for h in ("e2", "c2")]
    assert len(set(west)) == 1 and len(set(east)) == 1
    assert west[0] > east[0]


def test_hovering_a_link_shows_its_delay_and_bandwidth(page: Page) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    dx, dy = _link_point(page, "s_west|s_east")
    ActionChains(page.driver).move_to_element_with_offset(page.css("#cy"), dx, dy).perform()
    text = "s_west–s_east: 36 ms one-way, 100 Mbit/s"
    page.wait(f"document.getElementById('hover-info').textContent === {json.dumps(text)}", 3)
    assert page.js("return !document.getElementById('tooltip').hidden")
    ActionChains(page.driver).move_to_element_with_offset(page.css("#cy"), 0, -280).perform()


def _link_point(p: Page, link: str, at: float = 0.3) -> tuple[int, int]:
    """The offset from the graph's centre of a point ``at`` of the way along a straight link, with the
    graph scrolled into the window (a pointer action outside the viewport silently hits nothing)."""
    return tuple(
        p.js(
            f"""document.getElementById('cy').scrollIntoView({{block: 'center'}});
            const e = cdnlab.cy.getElementById({json.dumps(link)});
            const a = e.source().renderedPosition(), b = e.target().renderedPosition();
            const c = document.getElementById('cy');
            return [Math.round(a.x + {at} * (b.x - a.x) - c.clientWidth / 2),
                    Math.round(a.y + {at} * (b.y - a.y) - c.clientHeight / 2)];"""
        )
    )


def test_a_failed_edge_shows_in_its_row_and_node_within_a_second(page: Page) -> None:
    page.fake.send("state", state(e2="up"))
    page.wait("document.querySelector('#edge-row-e2 td.health').dataset.health === 'up'")
    t0 = time.monotonic()
    page.fake.send("state", state(e2="failed"))
    page.wait(
        "document.querySelector('#edge-row-e2 td.health').dataset.health === 'failed'"
        " && cdnlab.cy.getElementById('e2').hasClass('failed')",
        1.0,
    )
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0
    cell = page.js("return document.querySelector('#edge-row-e2 td.health').textContent")
    assert "failed" in cell and "process" in cell
    assert page.js("return cdnlab.cy.getElementById('e2').hasClass('up')") is False
    assert page.js("return cdnlab.cy.getElementById('e1').hasClass('up')")
    assert "failed" in page.js("return cdnlab.cy.getElementById('e2').data('label')")
    row = page.js(
        "const r = document.getElementById('edge-row-e1');"
        " return ['rps', 'hit', 'bytes', 'cache', 'load', 'catchment'].map(c => r.querySelector('td.' + c).textContent)"
    )
    assert row == ["12.5", "85 %", "3.0 MiB", "512.0 KiB", "0.4", "s_west"]
    page.fake.send("state", state(e2="up"))
    page.wait("cdnlab.cy.getElementById('e2').hasClass('up')")


def test_the_method_selector_draws_who_serves_each_client(page: Page) -> None:
    from selenium.webdriver.support.ui import Select

    page.fake.send("state", state())
    want_anycast = {c.name: c.anycast for c in CLIENTS if c.anycast}
    page.wait(f"cdnlab.cy.edges('.serves').length === {len(want_anycast)}")
    assert _serves(page) == want_anycast

    Select(page.css("#method")).select_by_value("dns")
    want_dns = {c.name: c.dns for c in CLIENTS if c.dns}
    assert want_dns == {"c1": "e2"}
    page.wait("cdnlab.method === 'dns' && cdnlab.cy.edges('.serves').every(e => e.data('method') === 'dns')")
    assert _serves(page) == want_dns
    assert page.js("return cdnlab.cy.edges('.serves')[0].style('line-style')") == "dashed"
    # c2 has no DNS answer: marked, and its error is on hover and in the table
    assert page.js("return cdnlab.cy.getElementById('c2').hasClass('no-answer')")
    page.js("cdnlab.cy.getElementById('c2').emit('mouseover')")
    assert "SERVFAIL from the resolver" in page.js("return document.getElementById('hover-info').textContent")
    page.js("cdnlab.cy.getElementById('c2').emit('mouseout')")
    assert "SERVFAIL" in page.js("return document.querySelector('#client-row-c2 td.dns').textContent")
    assert page.js("return document.querySelector('#client-row-c1 td.dns').textContent") == "e2 (20 s)"

    Select(page.css("#method")).select_by_value("anycast")
    page.wait(
        "cdnlab.method === 'anycast' && cdnlab.cy.edges('.serves').every(e => e.data('method') === 'anycast')"
    )
    assert _serves(page) == want_anycast
    assert not page.js("return cdnlab.cy.getElementById('c2').hasClass('no-answer')")


def test_timeline_events_appear_newest_first(page: Page) -> None:
    page.fake.send(
        "event", TimelineEvent(seq=1, time=time.time(), kind="failure", text="e2 failed (process)", host="e2")
    )
    page.fake.send(
        "event", TimelineEvent(seq=2, time=time.time(), kind="recovery", text="e2 is back", host="e2")
    )
    page.wait(
        "document.querySelector('#timeline li') && cdnlab.events.length >= 2 && cdnlab.events[0].seq === 2"
    )
    first = page.js("return document.querySelector('#timeline li').textContent")
    assert "e2 is back" in first and "recovery" in first
    texts = page.js("return [...document.querySelectorAll('#timeline li .text')].map(s => s.textContent)")
    assert texts.index("e2 is back") < texts.index("e2 failed (process)")


def test_the_fail_button_posts_the_action_with_the_token(page: Page) -> None:
    fake = page.fake
    before = len(fake.actions)
    fake.action_delay = 0.5
    try:
        page.css('button[data-action="fail"][data-host="e1"]').click()
        # disabled while the request is in flight
        page.wait('document.querySelector(\'button[data-action="fail"][data-host="e1"]\').disabled', 0.4)
        posted = fake.wait_actions(before + 1, 5)[-1]
    finally:
        fake.action_delay = 0.0
    assert posted.body == {"action": "fail", "host": "e1", "kind": "process"}
    assert posted.token == TOKEN and posted.status == 200
    page.wait('!document.querySelector(\'button[data-action="fail"][data-host="e1"]\').disabled', 3)
    page.wait("document.getElementById('action-status').textContent.includes('fail e1')")

    # another kind, then recover
    from selenium.webdriver.support.ui import Select

    Select(page.css('select.fail-kind[data-host="e2"]')).select_by_value("host")
    page.css('button[data-action="fail"][data-host="e2"]').click()
    assert fake.wait_actions(before + 2, 5)[-1].body == {"action": "fail", "host": "e2", "kind": "host"}
    page.css('button[data-action="recover"][data-host="e2"]').click()
    assert fake.wait_actions(before + 3, 5)[-1].body == {"action": "recover", "host": "e2"}
    page.css('button[data-action="drain"][data-host="e1"]').click()
    assert fake.wait_actions(before + 4, 5)[-1].body == {"action": "drain", "host": "e1", "service": "http"}


def test_clicking_a_link_offers_link_down(page: Page) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    before = len(page.fake.actions)
    dx, dy = _link_point(page, "s_west|s_east")
    ActionChains(page.driver).move_to_element_with_offset(page.css("#cy"), dx, dy).click().perform()
    page.wait("!document.getElementById('link-menu').hidden", 3)
    page.css('#link-menu button[data-action="link_down"]').click()
    posted = page.fake.wait_actions(before + 1, 5)[-1]
    assert posted.body == {"action": "link_down", "link": "s_west|s_east"}
    assert posted.token == TOKEN
    page.wait("document.getElementById('link-menu').hidden", 3)


def test_a_link_that_is_down_is_drawn_dashed_red(page: Page) -> None:
    page.fake.send("state", state(links_down=("e2|s_east",)))
    page.wait("cdnlab.cy.getElementById('e2|s_east').hasClass('down')", 2)
    link = page.js(
        "const e = cdnlab.cy.getElementById('e2|s_east'); return [e.style('line-style'), e.style('line-color')]"
    )
    assert link[0] == "dashed"
    red = page.js(
        "return getComputedStyle(document.documentElement).getPropertyValue('--health-failed').trim()"
    )
    assert link[1] == _rgb(red)
    assert not page.js("return cdnlab.cy.getElementById('s_west|s_east').hasClass('down')")
    option = page.js("return document.querySelector('#link-select option[value=\"e2|s_east\"]').textContent")
    assert option == "e2–s_east: 1 ms one-way — DOWN"
    page.fake.send("state", state())
    page.wait("!cdnlab.cy.getElementById('e2|s_east').hasClass('down')", 2)
    assert page.js("return cdnlab.cy.getElementById('e2|s_east').style('line-style')") == "solid"


def _rgb(hex_colour: str) -> str:
    h = hex_colour.lstrip("#")
    return "rgb({},{},{})".format(*(int(h[i : i + 2], 16) for i in (0, 2, 4)))


def test_the_purge_form_posts_path_and_chosen_edges(page: Page) -> None:
    before = len(page.fake.posts)
    path = page.css("#purge-path")
    path.clear()
    path.send_keys("videos/a.mp4")  # no leading slash: refused by the page, nothing posted
    page.css('#purge-form button[data-action="purge"]').click()
    page.wait("document.getElementById('purge-path').getAttribute('aria-invalid') === 'true'", 2)
    assert len(page.fake.posts) == before
    accepted = len(page.fake.actions)
    path.clear()
    path.send_keys("/videos/a.mp4")
    page.css('#purge-hosts input[value="e2"]').click()
    page.css('#purge-form button[data-action="purge"]').click()
    posted = page.fake.wait_actions(accepted + 1, 5)[-1]
    assert posted.body == {"action": "purge", "path": "/videos/a.mp4", "hosts": ["e2"]}


def test_a_refused_action_is_shown_in_the_timeline(page: Page) -> None:
    page.fake.reply_next(400, {"error": "no such edge: e2"})
    page.css('button[data-action="restore"][data-host="e2"]').click()
    page.wait("document.querySelector('#timeline li').dataset.kind === 'error'", 3)
    assert "no such edge: e2" in page.js("return document.querySelector('#timeline li').textContent")
    assert page.js("return document.getElementById('action-status').className").endswith("error")
    assert page.fake.posts[-1].status == 400


def test_the_fake_refuses_an_action_without_the_token(page: Page) -> None:
    req = urllib.request.Request(
        page.fake.url + "/api/action",
        data=json.dumps({"action": "recover", "host": "e1"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 403
    assert "error" in json.loads(err.value.read())
    assert page.fake.posts[-1].valid is False


def test_the_experiment_panel_shows_only_while_one_runs(page: Page) -> None:
    exp = ExperimentState(
        name="failover", progress=0.42, phase="e2 failed", figures={"p50_ms": 12.5, "errors": 3}
    )
    page.fake.send("state", state(experiment=exp))
    page.wait("!document.getElementById('experiment').hidden", 2)
    assert page.js("return document.getElementById('exp-name').textContent") == "failover"
    assert page.js("return document.getElementById('exp-progress').value") == pytest.approx(0.42)
    assert page.js("return document.getElementById('exp-pct').textContent") == "42 %"
    assert page.js("return document.getElementById('exp-phase').textContent") == "e2 failed"
    figures = page.js(
        "return [...document.querySelectorAll('#exp-figures tr')].map(r => [r.dataset.figure, r.querySelector('td').textContent])"
    )
    assert figures == [["p50_ms", "12.5"], ["errors", "3"]]
    st = state()
    page.fake.send("state", st)
    page.wait("document.getElementById('experiment').hidden", 2)
    page.wait(f"document.getElementById('last-state').textContent.includes('seq {st.seq}')", 2)


def test_screenshot_and_a_clean_console(page: Page, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    exp = ExperimentState(name="failover", progress=0.6, phase="e2 failed", figures={"p50_ms": 41.0})
    page.fake.send("state", state(e2="failed", links_down=("s_west|s_east",), experiment=exp))
    page.fake.send(
        "event", TimelineEvent(seq=3, time=time.time(), kind="failure", text="e2 failed (process)", host="e2")
    )
    Select(page.css("#method")).select_by_value("redirect")
    page.wait(
        "cdnlab.cy.getElementById('e2').hasClass('failed') && cdnlab.cy.edges('.serves').length === 2", 2
    )
    shot = save_screenshot(page.driver, tmp_path / "dashboard.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    if os.environ.get("CDNLAB_ARTIFACTS"):
        out = Path(os.environ["CDNLAB_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "dashboard.png")
    # the refused actions above log their 4xx answers; nothing else may be an error
    logs = page.driver.get_log("browser")
    errors = [entry for entry in logs if entry["level"] == "SEVERE" and "/api/action" not in entry["message"]]
    assert errors == []


def test_a_read_only_topology_hides_every_action(page: Page) -> None:
    """During `cdnlab run --web` the experiment owns the network: no button, no form, no link menu."""
    visible = "[...document.querySelectorAll('[data-action]')].filter(b => b.offsetParent !== null).length"
    assert page.js(f"return {visible}") > 0
    page.fake.send("topology", TOPOLOGY.model_copy(update={"actions": False}))
    page.wait(f"document.body.classList.contains('read-only') && {visible} === 0", 2)
    assert page.js("return document.getElementById('actions-panel').offsetParent") is None
    page.fake.send("topology", TOPOLOGY)
    page.wait(f"!document.body.classList.contains('read-only') && {visible} > 0", 2)
