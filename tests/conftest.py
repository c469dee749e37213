"""Test tiers: unit tests run anywhere on loopback; ``@pytest.mark.mininet`` tests need root, OVS and Mininet.

Mininet-tier tests are skipped with a reason (not silently passed) when the machine cannot run them.
"""

from __future__ import annotations

import os

import pytest

LINK_MODES = ("auto", "netem", "relay")
DATAPATHS = ("auto", "kernel", "user")


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--links`` and ``--datapath``: how the Mininet tier emulates (as ``cdnlab up --links/--datapath``).

    ``make test`` leaves both on ``auto`` (netem and the kernel datapath where this kernel has them, else
    the relay and the userspace datapath); ``make test-vm`` runs the tier with ``--links netem
    --datapath kernel`` inside a VM of Debian's kernel. The environment variables ``CDNLAB_TEST_LINKS``
    and ``CDNLAB_TEST_DATAPATH`` give the defaults.
    """
    g = parser.getgroup("cdnlab")
    g.addoption("--links", choices=LINK_MODES, default=os.environ.get("CDNLAB_TEST_LINKS", "auto"),
                help="link emulation of the Mininet tier: auto | netem | relay (default: auto)")
    g.addoption("--datapath", choices=DATAPATHS, default=os.environ.get("CDNLAB_TEST_DATAPATH", "auto"),
                help="Open vSwitch datapath of the Mininet tier: auto | kernel | user (default: auto)")


def _mininet_ready() -> str | None:
    """None when the Mininet tier can run here, else the reason it cannot."""
    from testbed.net.host_env import emulation_missing

    return emulation_missing()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _mininet_ready()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "mininet" in item.keywords:
            item.add_marker(skip)


_TIER_TIME: dict[str, list[float]] = {}


def _tier(item_keywords) -> str:
    if "docs" in item_keywords:
        return "docs"
    return "mininet" if "mininet" in item_keywords else "unit"


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add up each test's setup, call and teardown time by tier (for the summary below and CI)."""
    tier = _tier(report.keywords)
    slot = _TIER_TIME.setdefault(tier, [0.0, 0])
    slot[0] += report.duration
    if report.when == "call" or (report.when == "setup" and report.skipped):
        slot[1] += 1


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    """Where the time went, per tier: ``time per tier: unit 41.2 s (517 tests), mininet ...``."""
    if _TIER_TIME:
        parts = [f"{t} {s:.1f} s ({int(n)} tests)" for t, (s, n) in sorted(_TIER_TIME.items())]
        terminalreporter.write_line("time per tier: " + ", ".join(parts))
