"""Processes as a tree, read from ``/proc`` (reads only): who is whose child, for measuring a service
process together with the processes it started (the resolver's ``unbound``, a shell's command)."""

from __future__ import annotations

from pathlib import Path


def children(proc: Path = Path("/proc")) -> dict[int, list[int]]:
    """parent pid -> its children's pids, for every process visible in ``proc`` (see proc(5), ``stat``:
    the fourth field, after the command name in parentheses, is the parent's pid)."""
    kids: dict[int, list[int]] = {}
    for p in proc.iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:  # gone since the listing
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(p.name))
    return kids


def descendants(roots: list[int], kids: dict[int, list[int]]) -> list[int]:
    """``roots`` and every process below them in ``kids`` (from :func:`children`), each once, roots first."""
    out: list[int] = []
    seen: set[int] = set()
    stack = list(reversed(roots))
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        stack += reversed(kids.get(pid, []))
    return out


def vm_rss_kb(status: str) -> int:
    """Resident memory in KiB from the text of ``/proc/<pid>/status`` (proc(5), ``VmRSS``); 0 when it has
    none (a kernel thread, a zombie)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
