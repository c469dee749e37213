"""#14 item 4: each service declares its start order and readiness (``DAEMON``, as IPMininet's ``Daemon``);
the launcher and the plan derive the stages from those declarations alone."""

from __future__ import annotations

import importlib

import pytest

from testbed.net.launch import SERVICE_MODULES, daemon, start_stages
from testbed.net.spec import load_topology
from testbed.plan import make_plan
from testbed.services.base import ServiceConfig
from testbed.services.daemon import Daemon, DnsReady, HttpReady
from testbed.services.daemon import start_stages as stages_of


def _d(role: str, *after: str) -> Daemon:
    return Daemon(role=role, module=f"x.{role}", config=ServiceConfig, ready=HttpReady("/"), after=after)


@pytest.mark.parametrize("role", sorted(SERVICE_MODULES))
def test_every_service_module_declares_itself(role: str) -> None:
    d = importlib.import_module(SERVICE_MODULES[role]).DAEMON
    assert d.role == role and d.module == SERVICE_MODULES[role]
    assert issubclass(d.config, ServiceConfig)
    assert isinstance(d.ready, HttpReady | DnsReady)


def test_the_stages_follow_what_each_service_waits_for() -> None:
    stages = start_stages()
    stage = {role: i for i, roles in enumerate(stages) for role in roles}
    assert stage["origin"] == stage["edge"] == 0  # edges fetch on demand: they start with the origin
    for role in SERVICE_MODULES:
        assert all(stage[a] < stage[role] for a in daemon(role).after), (role, stages)
    assert stage["resolver"] > stage["dns"] > stage["edge"]
    assert stages == [["origin", "edge"], ["dns", "redirector"], ["resolver"]]


def test_a_role_waiting_for_an_undeclared_one_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="service b: starts after nosuch, which no service declares"):
        stages_of({"a": _d("a"), "b": _d("b", "a", "nosuch")})


def test_a_cycle_is_refused_naming_its_members() -> None:
    with pytest.raises(ValueError, match=r"services b, c wait for each other"):
        stages_of({"a": _d("a"), "b": _d("b", "c"), "c": _d("c", "b")})


def test_roles_of_one_stage_keep_the_declared_order() -> None:
    assert stages_of({"z": _d("z"), "a": _d("a"), "m": _d("m", "z")}) == [["z", "a"], ["m"]]


def test_the_plan_numbers_stages_as_the_launcher_starts_them(tmp_path) -> None:
    plan = make_plan(load_topology("globe"), run_dir=tmp_path / "run")
    by_role = {s.role: s.stage for s in plan.services}
    stages = start_stages()
    for i, roles in enumerate(stages, start=1):
        for role in roles:
            if role in by_role:
                assert by_role[role] == i, (role, by_role)
    assert by_role["resolver"] == 3
    assert all(s.module == daemon(s.role).module for s in plan.services)
