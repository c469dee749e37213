"""Multicast inside the CDN: content ingest (origin -> edges), invalidation, and the control channel.

- :mod:`contract.mcast_wire`: the message formats (struct codec, strict validation, HMAC/digest tags).
- :mod:`.sender` / :mod:`.receiver`: NACK-based reliable multicast ingest (NORM-style, RFC 5740) as
  sans-I/O engines ``IngestSender`` (with its service) / ``IngestReceiver``; :mod:`.sinks`: where the
  receiver puts objects; :mod:`.receiver_service`: the receiver as a service of its own.
- :mod:`.control`: HEARTBEAT publishing and ``ControlListener`` (load per node, failure detection).
- :mod:`.sockets`: multicast sockets and the asyncio driver; :mod:`.simnet`: a seeded lossy simulated
  network.

Names are imported lazily so ``python -m testbed.services.mcast.sender`` does not import itself twice.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ControlListener": "control",
    "HeartbeatPublisher": "control",
    "LoadSample": "control",
    "LoadTable": "control",
    "NodeState": "control",
    "GroupConfig": "sockets",
    "open_group_socket": "sockets",
    "DirectorySink": "sinks",
    "IngestReceiver": "receiver",
    "MemorySink": "sinks",
    "ObjectSink": "sinks",
    "IngestSender": "sender",
    "SimNetwork": "simnet",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
