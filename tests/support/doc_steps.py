"""What a doc tells a student to type, and what it says they will see (for the ``docs`` test tier).

:func:`steps` reads a Markdown file and returns its commands in order:

* ``shell``: each line of a ```` ```sh ```` block. When the next fenced block is plain (no language) and
  only a short lead-in sentence ending in ``:`` lies between, that block is the command's output. A
  shell command that opens the CLI (``cdnlab up``) starts a *session*; the output block then ends with
  the ``cdnlab>`` prompt.
* ``cli``: each ``cdnlab> COMMAND`` line of a plain block; the lines up to the next prompt are its output.
  A line ``... about N s later ...`` makes the runner wait N s first. An inline ``# comment`` is dropped.

:func:`line_pattern` turns one output line of the doc into a regular expression that holds the doc to what
it shows and not to its figures: numbers, hex run ids and ``...`` placeholders match anything of their
kind, runs of spaces any spacing, and a row of a table its cells whatever their widths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\s*$")
PROMPT = "cdnlab> "
WAIT = re.compile(r"^\s*\.\.\.\s*about (\d+) s later\s*\.\.\.\s*$")
BOX = set("━┏┓┗┛┡┩┳┻╇└┘┴─┬┼┃│ ")
# what varies from run to run: "..." placeholders, run ids (mini-71ba7231), numbers that stand alone
# (times, counts, addresses, ports; not the digits of a name such as e1 or img0001, and not HTTP status
# codes), runs of spaces
_TOKEN = re.compile(r"\.\.\.|\b[0-9a-f]{8}\b|(?<=HTTP )\d{3}\b|(?<=HTTP/1\.1 )\d{3}\b"
                    r"|(?<![A-Za-z_\d])\d+(?:\.\d+)*|\s+")


@dataclass
class Step:
    kind: str  # "shell" or "cli"
    command: str
    line: int  # 1-based line of the command in the doc
    expected: list[str] = field(default_factory=list)
    wait_s: float = 0.0


def _blocks(text: str) -> list[tuple[str, int, list[str], str]]:
    """(language, first line number, lines, the prose before it) of every fenced block."""
    out, lang, start, body, prose = [], None, 0, [], []
    for i, ln in enumerate(text.splitlines(), 1):
        m = FENCE.match(ln)
        if m and lang is None:
            lang, start, body = m.group(1), i + 1, []
        elif m:
            out.append((lang, start, body, "\n".join(prose).strip()))
            lang, prose = None, []
        elif lang is not None:
            body.append(ln)
        else:
            prose.append(ln)
    return out


def steps(path: Path) -> list[Step]:
    """Every command of the doc at ``path`` in order, with the output the doc shows for it."""
    blocks = _blocks(path.read_text())
    out: list[Step] = []
    for k, (lang, start, body, _) in enumerate(blocks):
        if lang == "sh":
            cmds = [Step("shell", ln.split(" #")[0].strip(), start + j) for j, ln in enumerate(body)
                    if ln.strip() and not ln.lstrip().startswith("#")]
            if cmds and k + 1 < len(blocks):
                nlang, _, nbody, prose = blocks[k + 1]
                lead_in = not prose or (prose.endswith(":") and "\n\n" not in prose)
                if nlang == "" and lead_in and not any(ln.startswith(PROMPT) for ln in nbody):
                    cmds[-1].expected = [ln for ln in nbody if ln.strip() and ln.strip() != PROMPT.strip()]
            out += cmds
        elif lang == "":
            current: Step | None = None
            wait = 0.0
            for j, ln in enumerate(body):
                if ln.startswith(PROMPT):
                    current = Step("cli", ln[len(PROMPT):].split("  #")[0].strip(), start + j, wait_s=wait)
                    wait = 0.0
                    out.append(current)
                elif (m := WAIT.match(ln)) is not None:
                    wait = float(m.group(1))
                    current = None
                elif current is not None and ln.strip():
                    current.expected.append(ln)
    return out


def line_pattern(line: str) -> re.Pattern[str] | None:
    """A pattern for one output line of the doc (None for lines that only draw a table's frame)."""
    s = line.strip()
    if not s or set(s) <= BOX or s == "...":
        return None
    if s[0] in "│┃":
        cells = [c.strip() for c in re.split(r"[│┃]", s) if c.strip()]
        return re.compile(r"[│┃]\s*" + r"\s*[│┃]\s*".join(_fuzzy(c) for c in cells) + r"\s*[│┃]")
    return re.compile(_fuzzy(s))


def _fuzzy(text: str) -> str:
    parts, pos = [], 0
    for m in _TOKEN.finditer(text):
        parts.append(re.escape(text[pos:m.start()]))
        tok = m.group(0)
        if tok == "...":
            parts.append(r".*?")
        elif tok.isspace():
            parts.append(r"\s+")
        elif text[max(0, m.start() - 5):m.start()].endswith(("HTTP ", "1.1 ")):
            parts.append(re.escape(tok))  # a status code says what happened
        elif re.fullmatch(r"[\d.]+", tok):
            parts.append(r"\d+(?:\.\d+)*")
        else:
            parts.append(r"[0-9a-f]{8}")
        pos = m.end()
    parts.append(re.escape(text[pos:]))
    return "".join(parts)


def missing_lines(expected: list[str], actual: str) -> list[str]:
    """The doc's output lines that do not appear in ``actual``, in the doc's order."""
    pos, missing = 0, []
    for ln in expected:
        pat = line_pattern(ln)
        if pat is None:
            continue
        m = pat.search(actual, pos)
        if m is None:
            missing.append(ln)
        else:
            pos = m.end()
    return missing
