"""Fixtures shared by the unit tests: a client session and a scriptable upstream for the HTTP services; the
grader limited to its direct stage."""

from __future__ import annotations

import aiohttp
import pytest
from cdn_helpers import Upstream


@pytest.fixture
async def http():
    """An aiohttp client session, closed after the test."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def up():
    """A scriptable upstream on loopback (:class:`cdn_helpers.Upstream`), stopped after the test."""
    u = await Upstream().start()
    yield u
    await u.close()


@pytest.fixture(autouse=True)
def _grade_direct_stage_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit tier grades the direct stage only: the network stage builds Mininet networks (tests/mininet)."""
    monkeypatch.setenv("CDNLAB_GRADE_STAGE", "direct")
