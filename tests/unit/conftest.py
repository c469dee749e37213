"""Fixtures shared by the unit tests of the HTTP services: a client session and a scriptable upstream."""

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
