"""What a graded submission may not use, checked before it runs and enforced in the process that runs it.

A lab's grader declares its reference implementation as ``REFERENCE``: entries ``"module:name"`` (one
function or class of a module the student otherwise uses, e.g. ``"controller.anycast:choose"``) or
``"module"`` (a whole module). Three layers keep a submission from re-exporting that code:

1. :func:`static_check` reads the submission's syntax tree before anything runs and names the line that
   imports or reaches a reference name, a lab's answer key or the grader, or a module that fishes in the
   interpreter (``gc``, ``ctypes``, ``importlib``, ``inspect``, ``subprocess``, ``sys.modules``, ...).
2. :func:`install`, in the sandbox process that runs the submission (:mod:`contract.sandbox`), puts a
   meta-path finder first on ``sys.meta_path`` (PEP 451) that refuses a wholly reserved module and loads a
   partly reserved one from a rewritten syntax tree in which each reserved name is a :class:`Blocked`
   stand-in. The reference code is never compiled in that process, so neither ``sys.modules`` nor the
   garbage collector's object graph holds it; the grader (and its own reference models) never load there.
3. An audit hook (PEP 578) refuses, once armed, opening the reference modules' sources and byte code, the
   labs' directories (answer keys, graders) other than the submission's own, and the repository's ``.git``;
   and starting processes or loading native code with ``ctypes``.

This keeps honest-looking shortcuts out of a grade; it is not a security boundary against hostile native
code, which belongs in a container (Gradescope runs each submission in one).
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

#: modules a submission may not import: they reach into the interpreter or start other processes
FORBIDDEN_MODULES = {
    "gc": "walks the interpreter's objects",
    "ctypes": "reads raw memory",
    "_ctypes": "reads raw memory",
    "importlib": "imports around the grader's import guard",
    "imp": "imports around the grader's import guard",
    "inspect": "reads other modules' source and frames",
    "marshal": "loads byte code",
    "subprocess": "starts processes",
    "_posixsubprocess": "starts processes",
    "multiprocessing": "starts processes",
    "pty": "starts processes",
    "runpy": "runs other modules",
    "code": "runs other code",
    "linecache": "reads other modules' source",
}
#: attributes of modules that fish in the interpreter
FORBIDDEN_ATTRIBUTES = {
    "sys.modules": "looks up modules the grader loaded",
    "sys._getframe": "reads the grader's frames",
    "sys.meta_path": "changes the import machinery",
    "sys.path_hooks": "changes the import machinery",
    "sys.path_importer_cache": "changes the import machinery",
    "os.system": "starts processes",
    "os.popen": "starts processes",
    "builtins.__import__": "imports around the grader's import guard",
}
#: builtins that evaluate code or import by name
FORBIDDEN_BUILTINS = {
    "__import__": "imports around the grader's import guard",
    "exec": "runs code the grader cannot check",
    "eval": "runs code the grader cannot check",
    "compile": "compiles code the grader cannot check",
}
#: module names that are the graders and the labs themselves
RESERVED_PREFIXES = ("cdnlab_grader_", "assignments")

#: audit events refused outright once the guard is armed
REFUSED_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "pty.spawn",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.addressof",
        "ctypes.cdata",
        "ctypes.string_at",
        "ctypes.wstring_at",
        "os.symlink",
        "os.link",
        "sys.addaudithook",
    }
)


class ReferenceBlocked(Exception):
    """A submission used (called, subclassed, looked into) one of the lab's reserved reference names."""


def reserved_message(qualified: str) -> str:
    return (
        f"{qualified} is this lab's reference implementation: a submission must implement it, "
        "not import or look it up"
    )


class Blocked:
    """Stands in for a reserved name in the sandbox: any use raises :class:`ReferenceBlocked`."""

    __slots__ = ("_what",)

    def __init__(self, what: str) -> None:
        object.__setattr__(self, "_what", what)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ReferenceBlocked(reserved_message(object.__getattribute__(self, "_what")))

    __call__ = _refuse
    __mro_entries__ = _refuse
    __iter__ = _refuse
    __getitem__ = _refuse

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        self._refuse()

    def __repr__(self) -> str:
        return f"<reserved: {object.__getattribute__(self, '_what')}>"


class _BlockedModule(ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        raise ReferenceBlocked(
            f"{self.__name__} is a lab's grader: its models and answers are not available to a submission"
        )


def blocked_module(name: str) -> ModuleType:
    """A stand-in for a grader module in the sandbox's ``sys.modules``: any lookup raises
    :class:`ReferenceBlocked`."""
    return _BlockedModule(name)


# ---------------------------------------------------------------------------------------------------------
# declarations


@dataclass(frozen=True)
class Reference:
    """A lab's reserved code: whole modules, and names within modules."""

    modules: frozenset[str] = frozenset()
    names: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Reference:
        modules: set[str] = set()
        names: dict[str, set[str]] = {}
        for entry in entries:
            mod, sep, name = entry.partition(":")
            if not mod or (sep and not name) or not all(p.isidentifier() for p in mod.split(".")):
                raise ValueError(
                    f"REFERENCE entry {entry!r} must be 'package.module' or 'package.module:name'"
                )
            if sep:
                names.setdefault(mod, set()).add(name)
            else:
                modules.add(mod)
        return cls(frozenset(modules), {m: frozenset(n) for m, n in names.items()})

    def entries(self) -> list[str]:
        return sorted(self.modules) + sorted(f"{m}:{n}" for m, ns in self.names.items() for n in ns)

    def qualified(self) -> set[str]:
        """Every reserved dotted name (``controller.anycast.choose``, ``testbed.services.freshness``)."""
        return set(self.modules) | {f"{m}.{n}" for m, ns in self.names.items() for n in ns}

    def reserved(self, dotted: str) -> str | None:
        """The reserved name ``dotted`` is, or reaches into (``m.choose.__code__`` -> ``m.choose``)."""
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in self.modules:
                return prefix
            if i > 1 and parts[i - 1] in self.names.get(".".join(parts[: i - 1]), ()):
                return prefix
        return None


# ---------------------------------------------------------------------------------------------------------
# 1. the static check


class _Scan(ast.NodeVisitor):
    def __init__(self, reference: Reference, filename: str) -> None:
        self.ref = reference
        self.filename = filename
        self.alias: dict[str, str] = {}  # local name -> dotted name it is bound to by an import
        self.problems: list[str] = []

    def _flag(self, node: ast.AST, what: str, why: str) -> None:
        self.problems.append(f"{self.filename}:{getattr(node, 'lineno', '?')}: {what}: {why}")

    def _check_dotted(self, node: ast.AST, dotted: str, shown: str) -> None:
        hit = self.ref.reserved(dotted)
        if hit is not None:
            self._flag(node, shown, reserved_message(hit))
            return
        top = dotted.split(".")[0]
        if top in FORBIDDEN_MODULES:
            self._flag(node, shown, f"{top} {FORBIDDEN_MODULES[top]}; a graded submission may not use it")
            return
        if any(dotted == p or dotted.startswith(p) for p in RESERVED_PREFIXES):
            self._flag(node, shown, "the labs' answer keys and graders are not available to a submission")
            return
        for attr, why in FORBIDDEN_ATTRIBUTES.items():
            if dotted == attr or dotted.startswith(attr + "."):
                self._flag(node, shown, f"{attr} {why}; a graded submission may not use it")
                return

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self._check_dotted(node, a.name, f"import {a.name}")
            if a.asname:
                self.alias[a.asname] = a.name
            else:
                top = a.name.split(".")[0]
                self.alias[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self._flag(node, "relative import", "a submission is a single module; import by absolute name")
            return
        mod = node.module or ""
        for a in node.names:
            if a.name == "*":
                self._check_dotted(node, mod, f"from {mod} import *")
                if mod in self.ref.names:
                    shown = ", ".join(sorted(self.ref.names[mod]))
                    self._flag(
                        node,
                        f"from {mod} import *",
                        f"{mod} holds this lab's reference implementation ({shown}): import the names you need",
                    )
                continue
            self._check_dotted(node, f"{mod}.{a.name}", f"from {mod} import {a.name}")
            self.alias[a.asname or a.name] = f"{mod}.{a.name}"

    def _dotted(self, node: ast.AST) -> str | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in self.alias:
            return ".".join([self.alias[node.id], *reversed(parts)])
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = self._dotted(node)
        if dotted is not None:
            before = len(self.problems)
            self._check_dotted(node, dotted, dotted)
            if len(self.problems) > before:
                return  # one report per chain
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in FORBIDDEN_BUILTINS and node.id not in self.alias:
            self._flag(node, node.id, f"{FORBIDDEN_BUILTINS[node.id]}; a graded submission may not use it")

    def visit_Call(self, node: ast.Call) -> None:
        # getattr(module, "name") / vars(module)["name"] on a reserved module
        if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "vars") and node.args:
            base = self._dotted(node.args[0]) or (
                self.alias.get(node.args[0].id) if isinstance(node.args[0], ast.Name) else None
            )
            if base is not None:
                if node.func.id == "vars":
                    self._check_dotted(node, base + ".__dict__", f"vars({base})")
                    if base in self.ref.names:
                        self._flag(node, f"vars({base})", f"{base} holds this lab's reference")
                elif len(node.args) > 1:
                    name = node.args[1]
                    if isinstance(name, ast.Constant) and isinstance(name.value, str):
                        self._check_dotted(node, f"{base}.{name.value}", f"getattr({base}, {name.value!r})")
                    elif base in self.ref.names or base in self.ref.modules:
                        self._flag(node, f"getattr({base}, ...)", f"{base} holds this lab's reference")
        self.generic_visit(node)


def static_check(path: Path, reference: Reference, source: str | None = None) -> list[str]:
    """Problems with a submission's imports and lookups, each ``file:line: what: why``; [] when clean.

    A file that does not parse returns [] (loading it reports the SyntaxError with its line).
    """
    text = path.read_text(errors="replace") if source is None else source
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError:
        return []
    scan = _Scan(reference, path.name)
    scan.visit(tree)
    return scan.problems


# ---------------------------------------------------------------------------------------------------------
# 2. the import guard


def _rewrite(source: str, filename: str, module: str, names: frozenset[str]) -> tuple[CodeType, set[str]]:
    """Compile ``source`` with each top-level definition of ``names`` replaced by a :class:`Blocked`."""
    tree = ast.parse(source, filename=filename)
    found: set[str] = set()
    body: list[ast.stmt] = []
    for node in tree.body:
        target: str | None = None
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name in names:
            target = node.name
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            hits = [t.id for t in targets if isinstance(t, ast.Name) and t.id in names]
            target = hits[0] if hits else None
        if target is None:
            body.append(node)
            continue
        found.add(target)
        stub = ast.parse(f"{target} = __cdnlab_blocked__({f'{module}.{target}'!r})").body[0]
        body.append(ast.copy_location(stub, node))
    tree.body = body
    ast.fix_missing_locations(tree)
    return compile(tree, filename, "exec", dont_inherit=True), found


class _RewrittenLoader(importlib.abc.Loader):
    def __init__(self, code: CodeType) -> None:
        self.code = code

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__["__cdnlab_blocked__"] = Blocked
        exec(self.code, module.__dict__)  # noqa: S102 - the project's own module, rewritten


class _RefusingLoader(importlib.abc.Loader):
    def __init__(self, name: str) -> None:
        self.name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        raise ImportError(reserved_message(self.name), name=self.name)

    def exec_module(self, module: ModuleType) -> None:  # pragma: no cover - create_module raised
        raise ImportError(reserved_message(self.name), name=self.name)


class GuardFinder(importlib.abc.MetaPathFinder):
    """Refuses reserved modules; serves partly reserved ones from their rewritten, precompiled code."""

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        self.compiled: dict[str, tuple[CodeType, importlib.machinery.ModuleSpec]] = {}
        self.files: set[str] = set()  # the reserved modules' source files

    def prepare(self) -> None:
        """Find and rewrite every partly reserved module now, before the guard is armed."""
        for mod, names in self.reference.names.items():
            spec = importlib.util.find_spec(mod)
            if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
                raise ImportError(f"grader REFERENCE names {mod!r}, which is not a Python source module")
            source = Path(spec.origin).read_text()
            code, found = _rewrite(source, spec.origin, mod, names)
            missing = names - found
            if missing:
                raise ImportError(
                    f"grader REFERENCE: {mod} defines no top-level {', '.join(sorted(missing))}"
                )
            self.compiled[mod] = (code, spec)
            self.files.add(os.path.realpath(spec.origin))
        for mod in self.reference.modules:
            spec = importlib.util.find_spec(mod)
            if spec is not None and spec.origin and spec.origin.endswith(".py"):
                self.files.add(os.path.realpath(spec.origin))

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if self.reference.reserved(fullname) == fullname and fullname in self.reference.modules:
            return importlib.machinery.ModuleSpec(fullname, _RefusingLoader(fullname))
        if fullname.startswith(RESERVED_PREFIXES):
            return importlib.machinery.ModuleSpec(fullname, _RefusingLoader(fullname))
        if fullname in self.compiled:
            code, real = self.compiled[fullname]
            spec = importlib.machinery.ModuleSpec(fullname, _RewrittenLoader(code), origin=real.origin)
            spec.has_location = True
            spec.submodule_search_locations = real.submodule_search_locations
            return spec
        return None


@dataclass
class Guard:
    """The installed guard: its finder and the paths the audit hook refuses once armed."""

    finder: GuardFinder
    protected: list[str]
    allowed: list[str]
    armed: bool = False

    def refuses(self, path: str) -> bool:
        real = os.path.realpath(path)
        if any(real == a or real.startswith(a + os.sep) for a in self.allowed):
            return False
        if any(real == p or real.startswith(p + os.sep) for p in self.protected):
            return True
        if real in self.finder.files:
            return True
        here = Path(real)
        return here.parent.name == "__pycache__" and any(
            here.parent.parent == Path(f).parent and here.name.startswith(Path(f).stem + ".")
            for f in self.finder.files
        )

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.armed:
            return
        if event in REFUSED_EVENTS:
            raise PermissionError(f"{event}: not allowed in a graded submission")
        if event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
            path = os.fsdecode(args[0])
            if path.startswith("/proc/") and not path.startswith(("/proc/self/", f"/proc/{os.getpid()}/")):
                raise PermissionError(f"{path}: other processes are not readable by a graded submission")
            if self.refuses(path):
                raise PermissionError(
                    f"{path}: the labs' answer keys, graders and reference are not readable"
                )


def install(reference: Reference, protected: Iterable[Path], allowed: Iterable[Path]) -> Guard:
    """Put the finder first on ``sys.meta_path`` and add the audit hook (unarmed until :meth:`arm`)."""
    already = sorted(m for m in [*reference.modules, *reference.names] if m in sys.modules)
    if already:
        raise RuntimeError(f"import guard installed after reserved modules were imported: {already}")
    finder = GuardFinder(reference)
    finder.prepare()
    guard = Guard(
        finder,
        [os.path.realpath(p) for p in protected],
        [os.path.realpath(p) for p in allowed],
    )
    sys.meta_path.insert(0, finder)
    sys.addaudithook(guard.audit)
    return guard


def arm(guard: Guard) -> None:
    """From now on refuse reading protected files, starting processes and loading native code."""
    guard.armed = True
