"""Starting the CDN's services in a real network: a service that dies on start fails the start at once,
naming the host and showing its log, instead of a readiness wait running to its deadline."""

from __future__ import annotations

import time

import pytest

from testbed.net.cdn import CdnOptions, CdnServices
from testbed.util import StopWaiting

pytestmark = pytest.mark.mininet


def test_a_service_that_exits_on_start_fails_the_start_at_once_with_its_log(cdn_net, monkeypatch) -> None:
    cn = cdn_net("mini", controller="standalone")
    monkeypatch.setattr(CdnServices, "origin_config", lambda self: {"name": self.origin, "bogus_field": 1})
    svc = CdnServices(cn, CdnOptions(roles=("origin",), ready_timeout=120))
    t0 = time.monotonic()
    with pytest.raises(StopWaiting) as err:
        svc.start()
    msg = str(err.value)
    assert f"origin {svc.origin} exited (status 2) before answering" in msg, msg
    assert "bogus_field: Extra inputs are not permitted" in msg, msg  # the log's tail says why
    assert time.monotonic() - t0 < 60, "the wait ran on although the process had exited"
