"""Progress for pipes and logs: plain lines instead of bars, so ``make demo | tee log`` shows life.

Rich's bars redraw one line of a terminal; written to a pipe or a CI log they show nothing for minutes.
:class:`LineProgress` takes the same calls the experiments make on a rich ``Progress`` (``add_task``,
``advance``, ``update``, ``tasks``) and prints a timestamped line when a step starts and ends, and a
heartbeat every ``interval`` seconds for the step under way: experiment, step, count, elapsed time and,
once something is done, the time left (ETA)::

    [12:00:05] selection: methods 1/3 (33 %), 21 s so far, about 42 s left
    [12:00:10] caching: no_cache (20 s of load): running for 10 s, no estimate yet
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class LineTask:
    id: int
    description: str
    total: float | None
    completed: float = 0.0
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    ended: float = 0.0


class LineProgress:
    """A stand-in for ``rich.progress.Progress`` that writes plain lines (see the module docstring)."""

    def __init__(self, prefix: str = "", stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.prefix = f"{prefix}: " if prefix else ""
        self.stream = stream or sys.stdout
        self.interval = interval
        self.tasks: list[LineTask] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the calls rich's Progress gets ---------------------------------------------------------------
    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        with self._lock:
            task = LineTask(len(self.tasks), description, total)
            self.tasks.append(task)
        self._say(f"{description} ...")
        return task.id

    def advance(self, task_id: int, advance: float = 1) -> None:
        with self._lock:
            t = self.tasks[task_id]
            t.completed += advance
        self._check_done(t)

    def update(self, task_id: int, completed: float | None = None, **_: Any) -> None:
        with self._lock:
            t = self.tasks[task_id]
            if completed is not None:
                t.completed = completed
        self._check_done(t)

    # -- lines ---------------------------------------------------------------------------------------
    def _check_done(self, t: LineTask) -> None:
        if not t.finished and t.total is not None and t.completed >= t.total:
            t.finished, t.ended = True, time.monotonic()
            self._say(f"{t.description}: done in {time.monotonic() - t.started:.0f} s")

    def _say(self, text: str) -> None:
        self.stream.write(f"[{time.strftime('%H:%M:%S')}] {self.prefix}{text}\n")
        self.stream.flush()

    def line(self, t: LineTask, now: float | None = None) -> str:
        """The heartbeat line for a step under way."""
        elapsed = (now if now is not None else time.monotonic()) - t.started
        if t.total and t.total > 1 or (t.total and t.completed):
            frac = min(1.0, t.completed / t.total)
            left = f"about {elapsed * (1 - frac) / frac:.0f} s left" if frac > 0 else "no estimate yet"
            return (f"{t.description} {t.completed:g}/{t.total:g} ({100 * frac:.0f} %), {elapsed:.0f} s so far, "
                    f"{left}")
        return f"{t.description}: running for {elapsed:.0f} s, no estimate yet"

    def heartbeat(self) -> None:
        """Print the line of the latest step still under way; between steps, how long since the last one
        ended (nothing before the first step: the caller is still starting)."""
        with self._lock:
            running = [t for t in self.tasks if not t.finished]
            last = self.tasks[-1] if self.tasks else None
        if running:
            self._say(self.line(running[-1]))
        elif last is not None:
            self._say(f"working: {time.monotonic() - last.ended:.0f} s since {last.description} ended")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.heartbeat()

    def __enter__(self) -> LineProgress:
        self._thread = threading.Thread(target=self._run, name="progress-lines", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 1)


class WebProgress:
    """Forwards the progress calls to ``inner`` (a rich ``Progress``, a :class:`LineProgress`, or None)
    and shows the step under way on the dashboard (``cdnlab run NAME --web``): ``report(name, fraction,
    phase, figures)`` is called on each change."""

    def __init__(self, inner: Any, name: str, report: Any) -> None:
        self.inner = inner
        self.name = name
        self.report = report
        self._own: list[LineTask] = []
        self._ids: dict[int, LineTask] = {}
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._figures: dict[str, Any] = {}

    def figure(self, name: str, value: Any) -> None:
        """A figure of the run so far (``Run.figure``), shown with the progress."""
        with self._lock:
            self._figures[name] = value
        self._show()

    @property
    def tasks(self) -> Any:
        return self.inner.tasks if self.inner is not None else self._own

    def add_task(self, description: str, total: float | None = None, **kw: Any) -> int:
        tid = self.inner.add_task(description, total=total, **kw) if self.inner is not None else len(self._own)
        with self._lock:
            t = LineTask(tid, description, total)
            self._own.append(t)
            self._ids[tid] = t
        self._show()
        return tid

    def advance(self, task_id: int, advance: float = 1) -> None:
        if self.inner is not None:
            self.inner.advance(task_id, advance)
        with self._lock:
            self._ids[task_id].completed += advance
        self._show()

    def update(self, task_id: int, completed: float | None = None, **kw: Any) -> None:
        if self.inner is not None:
            self.inner.update(task_id, completed=completed, **kw)
        with self._lock:
            if completed is not None:
                self._ids[task_id].completed = completed
        self._show()

    def _show(self) -> None:
        with self._lock:
            tasks = list(self._own)
        done = [t for t in tasks if t.total is not None and t.completed >= t.total]
        running = [t for t in tasks if t not in done]
        cur = running[-1] if running else (tasks[-1] if tasks else None)
        frac = 0.0
        phase = ""
        if cur is not None:
            phase = cur.description
            if cur.total:
                frac = min(1.0, cur.completed / cur.total)
                phase += f" {cur.completed:g}/{cur.total:g}"
        with self._lock:
            figures = dict(self._figures)
        self.report(self.name, frac, phase, {**figures, "steps done": len(done), "steps": len(tasks),
                                             "elapsed s": round(time.monotonic() - self._t0)})
