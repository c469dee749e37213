"""The network stage of a lab's grader: the student's code inside a real emulated CDN.

A network check builds a topology with Mininet (root), runs the student's file in a sandbox inside the
service that uses it — the controller (``--submission``: anycast ``choose``, multicast ``build_tree``), an
edge (freshness decisions, an eviction policy) or the mapping DNS server (a mapping policy) — and measures
what clients see through the network. The sandbox is :mod:`contract.sandbox`'s, with the same import guard
as the direct stage; a service plugs the student's proxy in through its config's ``submission`` field
(:class:`contract.sandbox.Submission`).

Where Mininet cannot run (not root, no Mininet, no Open vSwitch) a network check raises
:class:`testbed.grade.Skip`, which says what is missing; ``cdnlab grade LAB --stage direct`` leaves the
network stage out on purpose.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from contract.sandbox import Submission
from testbed.grade import Fail, Skip, protected_paths


def unavailable() -> str | None:
    """Why the network stage cannot run on this machine, or None when it can."""
    from testbed.net import host_env

    why = host_env.emulation_missing()
    if why and os.geteuid() != 0:
        return "the network stage builds an emulated network and needs root: sudo cdnlab grade ..."
    return f"the network stage cannot build its network: {why}" if why else None


def require_network() -> None:
    """Raise :class:`Skip` (naming what is missing) unless the network stage can run here."""
    why = unavailable()
    if why:
        raise Skip(why)


def submission_of(
    mod: Any,
    reference: tuple[str, ...] | list[str],
    patch: dict[str, str] | None = None,
    preload: tuple[str, ...] | list[str] = (),
) -> Submission:
    """The :class:`Submission` that runs the student's file of ``mod`` (the grader's proxy) in a service."""
    path = getattr(mod, "__file__", None)
    name = getattr(mod, "__name__", None)
    if not isinstance(path, str) or not isinstance(name, str):
        raise Fail("internal: the student's module has no file or name")
    refs = list(reference)
    return Submission(
        file=Path(path),
        module=name,
        reference=refs,
        protected=protected_paths(),
        preload=list(preload) or sorted({r.partition(":")[0] for r in refs if ":" in r}),
        patch=patch or {},
    )


@contextmanager
def lab_network(
    topo: Any,
    cdn: Any = None,
    controller_submission: Submission | None = None,
    keep: bool = False,
) -> Iterator[tuple[Any, Any]]:
    """Build ``topo`` (a Topology or a topology name), start the CDN services (``cdn``: CdnOptions) and yield
    ``(CdnNet, CdnServices)``; everything is torn down afterwards, the run directory removed unless
    ``keep``. ``controller_submission`` runs in the Ryu controller (Skip where only the standalone
    controller can run)."""
    require_network()
    from testbed.net.build import BuildOptions, CdnNet
    from testbed.net.launch import start_services
    from testbed.net.spec import load_topology

    if isinstance(topo, str):
        topo = load_topology(topo)
    run_dir = Path(tempfile.mkdtemp(prefix="cdnlab-grade-"))
    sub_file = None
    if controller_submission is not None:
        sub_file = run_dir / "submission.json"
        sub_file.write_text(controller_submission.model_dump_json())
    opts = BuildOptions(run_dir=run_dir, controller_submission=sub_file)
    try:
        cn = CdnNet(topo, opts)
        try:
            cn.start()  # stops what it started when it fails
        except Exception as e:  # the student's code in the controller can keep the network from coming up
            errs = controller_errors(cn)
            if controller_submission is None or not errs:
                raise
            raise Fail(f"the network did not come up ({e}); the controller logged: {errs[-1]}") from None
        try:
            if controller_submission is not None and cn.controller_mode != "ryu":
                raise Skip(
                    f"the network stage needs the Ryu controller (this machine runs {cn.controller_mode})"
                )
            try:
                svc = start_services(cn, cdn)
            except Exception as e:  # a service that runs the student's code did not start
                errs = service_errors(cn)
                if not errs:
                    raise
                raise Fail(f"the CDN's services did not start ({e}); {errs[-1]}") from None
            yield cn, svc
        finally:
            cn.stop()
    finally:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def served_by(cn: Any, client: str, url: str, timeout: float = 3) -> str | None:
    """The edge that answered ``url`` from inside ``client`` (its X-Served-By), None without an answer."""
    out = cn.host(client).cmd(f"curl -s -m {timeout:g} -o /dev/null -D - {url}")
    m = re.search(r"(?im)^x-served-by:\s*(\S+)", out)
    return m.group(1) if m else None


def controller_errors(cn: Any, limit: int = 3) -> list[str]:
    """The last lines of the controller's log that report an exception (the student's code raising there)."""
    if cn.run_dir is None:
        return []
    log = Path(cn.run_dir) / "controller.log"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    hits = [ln for ln in lines if re.search(r"Error|Exception|ReferenceBlocked|Traceback", ln)]
    return hits[-limit:]


_TB_LAST = re.compile(r"[\w.]+(Error|Exception|Blocked): ")  # the last line of a logged traceback


def service_errors(cn: Any, limit: int = 3) -> list[str]:
    """What the services logged about a submission that did not load (``<host> logged: ...``), last ``limit``."""
    if cn.run_dir is None:
        return []
    hits: list[str] = []
    logs = Path(cn.run_dir) / "logs"
    for log in sorted([*logs.glob("*.log"), *logs.glob("*.out")]):
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        hits += [
            f"{log.stem} logged: {ln if _TB_LAST.match(ln) else ln.split(': ', 1)[-1]}"
            for ln in lines
            if ("submission" in ln and ("ERROR" in ln or "does not load" in ln)) or _TB_LAST.match(ln)
        ]
    return hits[-limit:]
