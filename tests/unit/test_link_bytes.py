"""``testbed.measure.link_bytes``: interface byte counters, in the root namespace and in a named one."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from testbed.measure import link_bytes


def test_the_root_namespaces_loopback_counts_bytes() -> None:
    rx, tx = link_bytes.rx_tx("lo")
    assert rx >= 0 and tx >= 0 and link_bytes.read_counter("lo", "rx_packets") >= 0


def test_bad_names_are_refused_and_a_missing_interface_raises() -> None:
    with pytest.raises(ValueError, match="not a counter name"):
        link_bytes.read_counter("lo", "../../../etc/passwd")
    with pytest.raises(OSError):
        link_bytes.read_counter("cdnlab-no-such-intf")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace")
def test_a_named_namespace_is_read_inside_it() -> None:
    ns = f"cdnlab-ut-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        # the namespace's own loopback, down and unused: nothing counted, whatever the root's lo did
        assert link_bytes.rx_tx("lo", netns=ns) == (0, 0)
        with pytest.raises(subprocess.CalledProcessError):
            link_bytes.read_counter("cdnlab-no-such-intf", netns=ns)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
