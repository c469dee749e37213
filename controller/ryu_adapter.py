"""The only module that imports the OpenFlow framework (Ryu 4.34 by default).

Everything the controller needs from Ryu is re-exported here, so the rest of the code (and every unit
test) is framework-free, and switching to os-ken (the maintained OpenStack fork of Ryu, same API under
the package name ``os_ken``) means setting ``CDNLAB_OF_FRAMEWORK=os_ken`` (and installing it).

Compatibility shim: Ryu 4.34's ``ryu.app.wsgi`` does ``from eventlet.wsgi import ALREADY_HANDLED``, a
name current eventlet (0.41, needed on Python 3.11) dropped; we provide a sentinel before importing Ryu.
Ryu only uses it as the return value of websocket handlers, which the controller does not use.

Importing this module does not monkey-patch anything; :func:`patch` (called by ``python -m controller``
before anything else) applies eventlet's green patching like ``ryu-manager`` does.
"""

from __future__ import annotations

import importlib
import os
import warnings

FRAMEWORK = os.environ.get("CDNLAB_OF_FRAMEWORK", "ryu")
if FRAMEWORK not in ("ryu", "os_ken"):
    raise ImportError(f"CDNLAB_OF_FRAMEWORK must be 'ryu' or 'os_ken', not {FRAMEWORK!r}")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "Eventlet is deprecated" on import
    import eventlet.wsgi

if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
    eventlet.wsgi.ALREADY_HANDLED = object()  # type: ignore[attr-defined]


def _imp(name: str):  # noqa: ANN202
    return importlib.import_module(f"{FRAMEWORK}.{name}")


hub = _imp("lib.hub")
cfg = _imp("cfg")
CONF = cfg.CONF
app_manager = _imp("base.app_manager")
ofp_event = _imp("controller.ofp_event")
_handler = _imp("controller.handler")
set_ev_cls = _handler.set_ev_cls
CONFIG_DISPATCHER = _handler.CONFIG_DISPATCHER
MAIN_DISPATCHER = _handler.MAIN_DISPATCHER
DEAD_DISPATCHER = _handler.DEAD_DISPATCHER
ofproto_v1_3 = _imp("ofproto.ofproto_v1_3")
ofproto_v1_3_parser = _imp("ofproto.ofproto_v1_3_parser")


def patch() -> None:
    """Green-patch the standard library (sockets, time) as ryu-manager does; call before starting apps."""
    hub.patch(thread=False)


def wsgi():  # noqa: ANN201
    """Ryu's WSGI module (WSGIApplication, ControllerBase, route, Response, start_service)."""
    return _imp("app.wsgi")


def topology_api():  # noqa: ANN201
    """Ryu's topology API (get_link) and events, for LLDP link discovery."""
    return _imp("topology.api"), _imp("topology.event")


def app_module_name(short: str) -> str:
    """Full module name of a framework app, e.g. ``topology.switches``."""
    return f"{FRAMEWORK}.{short}"
