"""``cdnlab bench failover`` refuses a topology it cannot fail over in, before building anything."""

from __future__ import annotations

import pytest

from benchmarks import failover


def test_a_topology_without_an_anycast_service_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert failover.main(["--topo", "multicast"]) == 2
    err = capsys.readouterr().err
    assert "multicast needs an anycast service of two or more members" in err


def test_an_unknown_client_is_refused_with_the_topologys_clients(capsys: pytest.CaptureFixture[str]) -> None:
    assert failover.main(["--client", "nobody"]) == 2
    assert "'nobody' (clients: c1, c2)" in capsys.readouterr().err


def test_an_unknown_topology_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert failover.main(["--topo", "no-such-topology"]) == 2
    assert "no-such-topology" in capsys.readouterr().err
