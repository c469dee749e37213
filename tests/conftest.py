"""Test tiers: unit tests run anywhere on loopback; ``@pytest.mark.mininet`` tests need root, OVS and Mininet.

Mininet-tier tests are skipped with a reason (not silently passed) when the machine cannot run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _mininet_ready() -> str | None:
    """None when the Mininet tier can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (run `sudo make test`)"
    try:
        import mininet  # noqa: F401
    except ImportError:
        return "Mininet is not importable (run `sudo make setup`)"
    if not shutil.which("ovs-vsctl"):
        return "Open vSwitch is not installed (run `sudo make setup`)"
    if subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True).returncode != 0:
        return "Open vSwitch is not running (run `sudo make setup`)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _mininet_ready()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "mininet" in item.keywords:
            item.add_marker(skip)
