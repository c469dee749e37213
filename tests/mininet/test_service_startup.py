"""Starting the CDN's services in a real network: a service that dies on start fails the start at once,
naming the host and showing its log, instead of a readiness wait running to its deadline; a generated
config that its service would refuse fails before anything starts."""

from __future__ import annotations

import dataclasses
import importlib
import time

import pytest

from contract.config import ConfigError
from testbed.net.launch import CdnOptions, CdnServices, daemon
from testbed.util import StopWaiting

pytestmark = pytest.mark.mininet


def test_a_service_that_exits_on_start_fails_the_start_at_once_with_its_log(cdn_net, monkeypatch) -> None:
    cn = cdn_net("mini", controller="standalone")
    # a process that exits at once (here: its module cannot be found), whatever its config
    declared = daemon("origin")
    monkeypatch.setattr(importlib.import_module(declared.module), "DAEMON",
                        dataclasses.replace(declared, module="testbed.services.no_such_service"))
    svc = CdnServices(cn, CdnOptions(roles=("origin",), ready_timeout=120))
    t0 = time.monotonic()
    with pytest.raises(StopWaiting) as err:
        svc.start()
    msg = str(err.value)
    assert f"origin {svc.origin} exited (status 1) before answering" in msg, msg
    assert "No module named testbed.services.no_such_service" in msg, msg  # the log's tail says why
    assert time.monotonic() - t0 < 60, "the wait ran on although the process had exited"


def test_a_bad_generated_config_fails_before_anything_starts(cdn_net, monkeypatch) -> None:
    """The launcher checks each config against the service's own model first (#14): the error names host
    and field at once, and no process was started."""
    cn = cdn_net("mini", controller="standalone")
    monkeypatch.setattr(CdnServices, "origin_config", lambda self: {"name": self.origin, "bogus_field": 1})
    svc = CdnServices(cn, CdnOptions(roles=("origin",), ready_timeout=120))
    with pytest.raises(ConfigError, match=r"origin \(origin\): bogus_field: Extra inputs are not permitted"):
        svc.start()
    assert not any(k.endswith(":origin") for k in cn.procs), cn.procs
