"""The experiment framework: specs as data, raw data first, then plots and a report built from it.

An experiment is two files:

* ``experiments/specs/<name>.yaml`` — an :class:`ExperimentSpec`: topology, seed, what the experiment
  cites (source-material sections and papers), ``params`` for a full run and ``quick`` overrides for
  ``--quick`` (which the test suite runs);
* ``experiments/<name>.py`` — ``Params``, an :class:`ExperimentParams` model of the spec's ``params``
  (each one typed; a missing, unknown or mistyped parameter in ``params`` or ``quick`` is a ConfigError
  naming the file and the field when the spec is loaded); ``run(r: Run) -> dict`` measures, writes raw
  samples with
  :meth:`Run.csv` and returns the results (written to ``results.json``); ``report(out: Path) -> None``
  rebuilds PNG plots and ``report.md`` from the files in ``out`` alone (``cdnlab report DIR``).

Every output directory holds ``results.json`` (with a ``meta`` block: experiment, seed, quick, topology,
parameters, emulation mode, timing), one or more CSV files of raw samples, PNG plots and ``report.md``.
"""

from __future__ import annotations

import csv
import importlib
import json
import platform
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contract.config import ConfigError, format_validation_error, load_model
from testbed.net import fidelity
from testbed.net.spec import Topology, load_topology

SPEC_DIR = Path(__file__).resolve().parent / "specs"


class ExperimentSpec(BaseModel):
    """``experiments/specs/<name>.yaml``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    topology: str | None = "globe"  # None: the experiment needs no emulated network
    seed: int = 1
    cites: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    quick: dict[str, Any] = Field(default_factory=dict)


class ExperimentParams(BaseModel):
    """Base of an experiment's ``Params``: every parameter a field, none unknown."""

    model_config = ConfigDict(extra="forbid")


def params_model(name: str) -> type[ExperimentParams] | None:
    """The ``Params`` model of experiment ``name`` (None for an experiment that declares none)."""
    model = getattr(module_for(name), "Params", None)
    return model if isinstance(model, type) and issubclass(model, ExperimentParams) else None


def validated_params(spec: ExperimentSpec, quick: bool, source: str = "") -> dict[str, Any]:
    """``spec.params`` (with ``spec.quick`` over them when ``quick``) checked against the experiment's
    ``Params``: a ConfigError names ``source`` (the spec file) and the field."""
    params = dict(spec.params)
    if quick:
        params.update(spec.quick)
    model = params_model(spec.name)
    if model is None:
        return params
    try:
        return model.model_validate(params).model_dump()
    except ValidationError as e:
        where = f"{source or spec.name}: {'quick' if quick else 'params'}"
        raise ConfigError(format_validation_error(where, e)) from None


def list_experiments() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def load_spec(name_or_path: str | Path) -> ExperimentSpec:
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml", ".json"):
        p = SPEC_DIR / f"{name_or_path}.yaml"
        if not p.exists():
            raise ConfigError(
                f"{name_or_path}: no such experiment; experiments: {', '.join(list_experiments())}"
            )
    spec = load_model(ExperimentSpec, p)
    extra = set(spec.quick) - set(spec.params)
    if extra:
        raise ConfigError(
            f"{p}: quick: overrides unknown params {sorted(extra)}; params: {sorted(spec.params)}"
        )
    if (SPEC_DIR.parent / f"{spec.name}.py").exists():  # typed parameters, full and quick
        validated_params(spec, False, str(p))
        validated_params(spec, True, str(p))
    return spec


def module_for(name: str) -> ModuleType:
    return importlib.import_module(f"experiments.{name}")


@dataclass
class Run:
    """What a runner gets: merged parameters, the output directory, the seed, and ways to record data."""

    spec: ExperimentSpec
    out: Path
    seed: int
    quick: bool
    topology: str | None
    params: dict[str, Any]
    build: dict[str, Any] = field(default_factory=dict)  # emulation flags (links, controller, ...)
    subnet: str | None = None  # renumber the topology into this block (``--subnet``)
    started: float = field(default_factory=time.time)
    progress: Any = None  # a rich Progress (or None when quiet)
    meta: dict[str, Any] = field(default_factory=dict)
    #: per network built, whether the emulation kept up (:func:`testbed.net.fidelity.collect`)
    emulation: list[dict[str, Any]] = field(default_factory=list)

    def check_emulation(self, cn: Any, since: tuple[float, int] | None = None) -> dict[str, Any]:
        """Ask a built network's relays whether they kept up, before it is torn down; kept for ``meta``.
        ``since``: :func:`testbed.net.fidelity.cpu_pressure` when the network was built."""
        v = fidelity.collect(cn, since=since)
        if getattr(cn, "link_checks", None) is not None:  # built with --verify-links
            from testbed.net import linkverify

            v["links_verified"] = linkverify.summary(cn.link_checks)
        self.emulation.append(v)
        return v

    def load_topology(self) -> Topology:
        """The run's topology, renumbered into ``subnet`` when one was given."""
        if self.topology is None:
            raise ValueError(f"experiment {self.spec.name} has no topology")
        return load_topology(self.topology, subnet=self.subnet)

    def csv(self, name: str, rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> Path:
        """Write raw samples to ``<out>/<name>.csv`` (columns from the first row unless given)."""
        rows = list(rows)
        cols = columns or (list(rows[0].keys()) if rows else [])
        p = self.out / f"{name}.csv"
        with p.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow(r)
        return p

    def json(self, name: str, data: Any) -> Path:
        p = self.out / f"{name}.json"
        p.write_text(json.dumps(data, indent=1, default=str))
        return p

    def figure(self, name: str, value: float | int | str | None) -> None:
        """A figure the run has so far (a method's p50, a trial's outage), shown live where the progress
        display can (``cdnlab run --web``: the dashboard's experiment panel); a no-op elsewhere."""
        show = getattr(self.progress, "figure", None)
        if show is not None:
            show(name, value)

    def rows_figure(self, label: str, rows: list[Mapping[str, Any]]) -> None:
        """Figures of one batch of driver samples (:mod:`testbed.measure.driver` rows): requests, errors and
        the median total time, as :meth:`figure`."""
        ok = [x for x in rows if not x.get("error")]
        totals = sorted(float(x["total_ms"]) for x in ok if x.get("total_ms") is not None)
        self.figure(f"{label}: requests", len(rows))
        self.figure(f"{label}: errors", len(rows) - len(ok))
        if totals:
            self.figure(f"{label}: total p50 ms", round(totals[len(totals) // 2], 1))

    def step(self, description: str, total: int | None = None):
        """A progress task (no-op without a progress display); call ``advance()`` on the result."""
        return _Task(self.progress, description, total)


class _Task:
    def __init__(self, progress: Any, description: str, total: int | None) -> None:
        self.progress = progress
        self.id = progress.add_task(description, total=total) if progress is not None else None

    def advance(self, n: float = 1) -> None:
        if self.progress is not None:
            self.progress.advance(self.id, n)

    def done(self) -> None:
        if self.progress is not None:
            t = self.progress.tasks[[t.id for t in self.progress.tasks].index(self.id)]
            self.progress.update(self.id, completed=t.total or t.completed, visible=True)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def read_results(out: Path) -> dict[str, Any]:
    p = out / "results.json"
    if not p.exists():
        raise ConfigError(f"{out}: no results.json here (is it an experiment's --out directory?)")
    return json.loads(p.read_text())


def run_experiment(
    name: str,
    out: Path,
    *,
    quick: bool = False,
    seed: int | None = None,
    topology: str | None = None,
    build: dict[str, Any] | None = None,
    progress: Any = None,
    subnet: str | None = None,
) -> dict[str, Any]:
    """Run one experiment: raw data and results.json first, then plots and report.md."""
    spec = load_spec(name)
    mod = module_for(spec.name)
    params = validated_params(spec, quick)
    out.mkdir(parents=True, exist_ok=True)
    r = Run(
        spec=spec,
        out=out,
        seed=spec.seed if seed is None else seed,
        quick=quick,
        topology=topology or spec.topology,
        params=params,
        build=dict(build or {}),
        progress=progress,
        subnet=subnet,
    )
    t0 = time.monotonic()
    results = mod.run(r)
    results = dict(results)
    results["meta"] = {
        "experiment": spec.name,
        "description": spec.description,
        "seed": r.seed,
        "quick": quick,
        "topology": r.topology,
        **({"subnet": subnet} if subnet else {}),
        "params": params,
        "cites": spec.cites,
        "duration_s": round(time.monotonic() - t0, 2),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.started)),
        "host": platform.node(),
        **r.meta,
    }
    if r.emulation:
        results["meta"]["emulation"] = fidelity.merge(r.emulation)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    mod.report(out)
    return results


#: columns holding a share (0..1), which reports print as a percentage, as the console does
PERCENT_SUFFIXES = ("_fraction", "hit_ratio", "offload")


def percent(v: float) -> str:
    """0.953 -> '95 %', 0.0421 -> '4.2 %' (one decimal below 10 %)."""
    p = 100 * v
    return f"{p:.1f} %" if 0 < abs(p) < 10 else f"{p:.0f} %"


def md_table(rows: list[Mapping[str, Any]], columns: list[str], headers: list[str] | None = None) -> str:
    """A Markdown table; shares (columns ending in :data:`PERCENT_SUFFIXES`) are printed as percentages."""

    def fmt(v: Any, col: str) -> str:
        if (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and col.endswith(PERCENT_SUFFIXES)
            and 0 <= v <= 1
        ):
            return percent(v)
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "" if v is None else str(v)

    head = headers or columns
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(fmt(r.get(c), c) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_report(out: Path, title: str, results: Mapping[str, Any], sections: list[tuple[str, str]]) -> Path:
    """``report.md``: title, what was run (meta), then the given (heading, Markdown body) sections."""
    meta = results.get("meta", {})
    lines = [f"# {title}", "", meta.get("description", ""), ""]
    lines.append(
        f"Topology `{meta.get('topology')}`, seed {meta.get('seed')}"
        f"{', quick mode' if meta.get('quick') else ''}; links {meta.get('link_mode', '-')}, "
        f"controller {meta.get('controller_mode', '-')}; took {meta.get('duration_s')} s."
    )
    if meta.get("emulation"):  # a network was built: say whether its links were measured
        lines += ["", fidelity.links_sentence(meta["emulation"])]
    warn = fidelity.warning(meta.get("emulation"))
    if warn:
        lines[2:2] = [f"> {warn}", ""]
    if meta.get("cites"):
        lines += ["", "Sources: " + "; ".join(meta["cites"])]
    for heading, body in sections:
        lines += ["", f"## {heading}", "", body]
    lines.append("")
    p = out / "report.md"
    p.write_text("\n".join(lines))
    return p


def plt():
    """matplotlib.pyplot with a non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot
