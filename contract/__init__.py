"""The contract layer: what the controller and the testbed both speak, and nothing else.

* :mod:`contract.config` - loading typed configuration with errors that name the file and the field;
* :mod:`contract.netview` - the network view the builder hands the controller (JSON schema, pydantic);
* :mod:`contract.mcast_wire` - the multicast wire format (NORM-style data, manifests, invalidations,
  heartbeats) spoken by the services and read by the controller;
* :mod:`contract.replay_window` - the anti-replay window (RFC 4303 §3.4.3 style) every receiver of
  multicast control messages applies after the tag check;
* :mod:`contract.sandbox` - the process a lab submission runs in and the proxies the grader, a service or
  the controller reach it through; :mod:`contract.import_guard` - what that process refuses to load.

Imports go one way (``pyproject.toml``, ``[tool.importlinter]``, checked by ``lint-imports`` in
``make test``): this package imports none of ``testbed``, ``controller``, ``experiments``, ``benchmarks``;
the controller imports only this package from the rest of the project; the testbed never imports the
controller.
"""
