"""The selection experiment on globe makes physical sense (quick mode, as `make demo` runs it)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.framework import read_csv
from testbed.net.spec import load_topology

pytestmark = pytest.mark.mininet
ROOT = Path(__file__).resolve().parents[2]


LINE_GAPS: list[float] = []  # seconds between the progress lines `cdnlab run` printed into a pipe


@pytest.fixture(scope="module")
def selection(tmp_path_factory: pytest.TempPathFactory, emulation) -> tuple[dict, Path]:
    """``cdnlab run selection --quick`` as a student runs it with ``| tee log``: stdout is a pipe."""
    out = tmp_path_factory.mktemp("selection")
    p = subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", "selection", "--quick", "--out", str(out),
                          "--links", emulation.links, "--datapath", emulation.datapath],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.stdout is not None
    last, lines = time.monotonic(), []
    for ln in p.stdout:
        now = time.monotonic()
        LINE_GAPS.append(now - last)
        last = now
        lines.append(ln)
    assert p.wait(60) == 0, "".join(lines)[-3000:]
    return json.loads((out / "results.json").read_text()), out


def test_a_pipe_shows_a_progress_line_at_least_every_10_s(selection) -> None:
    assert LINE_GAPS and max(LINE_GAPS) <= 10, LINE_GAPS


def test_result_keys_and_files(selection) -> None:
    res, out = selection
    for m in ("anycast", "dns", "redirect"):
        s = res["methods"][m]
        for k in ("ttfb_ms_p50", "total_ms_p50", "optimal_edge_fraction", "requests", "errors"):
            assert k in s, (m, k)
        assert s["requests"] > 20
        assert s["errors"] == 0, f"{m}: {s['errors']} errors"
    for f in ("results.json", "samples.csv", "report.md", "total_by_region.png", "breakdown.png"):
        assert (out / f).stat().st_size > 0
    # the quick run on globe is within what the relays can honour: nothing dropped unread, hardly anything
    # late (the machine-wide CPU pressure, also in the verdict, depends on what else the machine runs)
    emu = res["meta"]["emulation"]
    if res["meta"]["link_mode"] == "relay":
        assert emu["measured"] is True and emu["socket_drops"] == 0 and emu["late_fraction"] <= 0.01, emu
    # the emulation's own latency, across globe's longest path (4 hops, 282 ms of link delay)
    rtt = emu["path_rtt"]
    assert rtt["hops"] >= 3 and rtt["expected_ms"] > 100 and rtt["best_ms"] >= rtt["expected_ms"] - 0.5, rtt


def test_anycast_and_dns_send_every_client_to_its_nearest_edge(selection) -> None:
    res, _ = selection
    assert res["methods"]["anycast"]["optimal_edge_fraction"] == 1.0
    # the mapping DNS maps by the resolver's region; on globe every client uses its region's resolver
    assert res["methods"]["dns"]["optimal_edge_fraction"] == 1.0


def test_redirect_costs_round_trips_to_the_redirector(selection) -> None:
    """The redirect exchange is a fresh connection to the redirector: a handshake plus the request and
    its 302, i.e. one to two client-redirector RTTs on top of what anycast costs."""
    res, out = selection
    topo = load_topology("globe")
    rows = [r for r in read_csv(out / "samples.csv") if r["method"] == "redirect" and not r["error"]]
    by_region: dict[str, list[float]] = {}
    for r in rows:
        by_region.setdefault(r["region"], []).append(float(r["redirect_ms"]))
    for region, vals in by_region.items():
        client = next(h.name for h in topo.hosts_with("client") if h.region == region)
        rtt = 2 * topo.path_delay_ms(client, "redir")
        med = sorted(vals)[len(vals) // 2]
        assert 0.9 * rtt <= med <= 2 * rtt + 15, f"{region}: redirect {med:.1f} ms vs RTT {rtt:.0f} ms"
        extra = res["methods"]["redirect"]["regions"][region]["total_ms_p50"] - \
            res["methods"]["anycast"]["regions"][region]["total_ms_p50"]
        assert extra >= 0.8 * rtt, f"{region}: redirect adds only {extra:.1f} ms (RTT {rtt:.0f} ms)"


def test_ttfb_reflects_the_nearest_edge(selection) -> None:
    """A warm edge one access hop away answers within a few access-link RTTs, for every method."""
    res, _ = selection
    for m, s in res["methods"].items():
        assert s["ttfb_ms_p50"] < 40, f"{m}: TTFB {s['ttfb_ms_p50']} ms — not served from a nearby edge?"
    assert res["methods"]["anycast"]["total_ms_p50"] < res["methods"]["dns"]["total_ms_p50"]


@pytest.mark.vm
def test_selection_quick_on_mini_end_to_end_in_the_sessions_link_mode(tmp_path, emulation, exact_timing) -> None:
    """The experiment as a student runs it, on the smallest topology (the VM tier's experiment: under TCG
    globe takes minutes per build). What holds in every mode: it completes, every method answers every
    request, anycast and redirect pick the nearest edge, and the run says how it was emulated."""
    out = tmp_path / "sel"
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "run", "selection", "--quick", "--topo", "mini",
                        "--out", str(out), "--links", emulation.links, "--datapath", emulation.datapath,
                        "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["meta"]["link_mode"] == emulation.links and res["meta"]["datapath"] == emulation.datapath
    for m in ("anycast", "dns", "redirect"):
        s = res["methods"][m]
        # under TCG a request may miss its deadline (the emulated CPU is ten times slower): one in ten
        assert s["requests"] > 10 and s["errors"] <= (0 if exact_timing else s["requests"] // 10), (m, s)
    # under TCG a liveness probe (controller) or health probe (redirector) can still miss its stretched
    # deadline once and steer a request to the next edge: one in ten; exact platforms must be exact
    nearest = 1.0 if exact_timing else 0.9
    for m in ("anycast", "redirect"):
        assert res["methods"][m]["optimal_edge_fraction"] >= nearest, (m, res["methods"][m])
    assert (out / "report.md").stat().st_size > 0
    emu = res["meta"]["emulation"]
    if emulation.links == "netem":  # the kernel's counters of the netem links, as the relays' otherwise
        assert emu["netem"]["directions"] >= 2 and emu["netem"]["frames"] > 0, emu.get("netem")
    else:
        assert emu["relayed_link_directions"] >= 2 and emu["frames"] > 0, emu
