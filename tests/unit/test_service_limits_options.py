"""Service limits from CdnOptions and ``cdnlab up --limit ROLE.FIELD=VALUE``: into each service's config,
and a wrong role, field or value named before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.config import ConfigError
from testbed.net.build import BuildOptions, CdnNet
from testbed.net.launch import CdnOptions, CdnServices, limit_fields, parse_limit
from testbed.net.spec import load_topology
from testbed.net.up import main as up_main


def _services(tmp_path: Path, limits: dict) -> CdnServices:
    cn = CdnNet(load_topology("mini"), BuildOptions(run_dir=tmp_path))  # not started: configs only
    return CdnServices(cn, CdnOptions(limits=limits))


def test_limits_reach_every_service_of_the_role_and_no_other(tmp_path: Path) -> None:
    svc = _services(
        tmp_path,
        {"edge": {"max_connections": 64, "header_timeout_s": 2.5}, "dns": {"tcp_max_connections": 16}},
    )
    for e in ("e1", "e2"):
        cfg = svc.config(e)
        assert cfg.max_connections == 64 and cfg.header_timeout_s == 2.5
    assert svc.config("dns1").tcp_max_connections == 16
    assert "max_connections" not in svc.config("redir").model_fields_set
    assert "max_connections" not in svc.config("origin").model_fields_set


def test_a_field_that_is_not_a_limit_is_refused_with_the_list(tmp_path: Path) -> None:
    svc = _services(tmp_path, {"edge": {"capacity_bytes": 1}})
    with pytest.raises(
        ValueError, match=r"limits.edge.capacity_bytes: not a limit of edge; its limits: .*max_connections"
    ):
        svc.config("e1")


def test_a_bad_value_is_refused_naming_host_and_field(tmp_path: Path) -> None:
    svc = _services(tmp_path, {"redirector": {"max_connections": 0}})
    with pytest.raises(ConfigError, match=r"redir.*max_connections"):
        svc.config("redir")


def test_limit_fields_per_role() -> None:
    assert {
        "max_connections",
        "max_header_count",
        "max_header_bytes",
        "header_timeout_s",
        "keepalive_timeout_s",
    } <= set(limit_fields("edge"))
    assert "max_field_size" in limit_fields("edge") and "max_field_size" in limit_fields("origin")
    assert limit_fields("dns") == [
        "tcp_idle_timeout",
        "tcp_max_connections",
        "tcp_max_queries_per_connection",
    ]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("edge.max_connections=64", ("edge", "max_connections", 64)),
        ("dns.tcp_idle_timeout=2.5", ("dns", "tcp_idle_timeout", 2.5)),
    ],
)
def test_parse_limit(text: str, want: tuple) -> None:
    assert parse_limit(text) == want


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("edge.max_connections", "expected ROLE.FIELD=VALUE"),
        ("max_connections=3", "expected ROLE.FIELD=VALUE"),
        ("client.max_connections=3", "no role 'client' with limits"),
        ("edge.capacity_bytes=3", "edge has no limit 'capacity_bytes'; its limits: "),
    ],
)
def test_parse_limit_errors(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_limit(text)


def test_up_refuses_a_bad_limit_before_building(capsys: pytest.CaptureFixture[str]) -> None:
    assert up_main(["mini", "--limit", "edge.nope=1", "--no-cli"]) == 2
    assert "edge has no limit 'nope'" in capsys.readouterr().err
