"""The process that runs a graded submission, and the narrow interface the grader reaches it through.

``cdnlab grade`` never imports the student's file itself. :class:`Sandbox` starts
``python -m contract.sandbox`` with two pipes, which installs the import guard of
:mod:`contract.import_guard` (the lab's reference code is never compiled there; the labs' answer keys and
graders are unreadable), loads the submission and then serves requests. The grader holds a
:class:`RemoteObject` for the student's module and uses it like a module: attribute lookups, calls and
operators travel as pickled messages (length-prefixed frames). Data travels by value (builtins, dataclasses,
pydantic models, enums, addresses, multidicts); everything else — the student's functions, classes and
instances, the grader's own objects handed to student code (a fake edge state, a health checker) — travels
as a handle that the other side uses through a proxy, so calls go both ways (a symmetric RPC as in rpyc).

An exception raised by student code comes back as the same built-in exception type (``KeyError``,
``NotImplementedError``...) or a :class:`RemoteError`, carrying the student's file and line in
``cdnlab_where``. A time limit that fires while the grader waits marks the sandbox broken: the grader then
kills the process and starts a fresh one for the next check. The process dies with its parent
(``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import builtins
import dataclasses
import io
import itertools
import operator
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contract.import_guard import Blocked

FRAME = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024
#: seconds for the sandbox process to start (interpreter, guard, preloaded modules), before any limit
START_TIMEOUT = 60.0

_PLAIN = frozenset(
    {
        str,
        bytes,
        bytearray,
        int,
        float,
        complex,
        bool,
        type(None),
        list,
        tuple,
        dict,
        set,
        frozenset,
        range,
        slice,
    }
)
_DATA_MODULES = frozenset(
    {"ipaddress", "datetime", "decimal", "fractions", "uuid", "collections", "pathlib", "re", "multidict"}
)
_PRIVATE_MODULES = ("cdnlab_grader_", "cdnlab_student_", "__main__", "__mp_main__")
#: dunders a proxy forwards as attribute lookups (others raise AttributeError: pickle/copy probing)
_REMOTE_DUNDERS = frozenset({"__name__", "__qualname__", "__doc__", "__module__", "__file__", "__all__"})

_OPS: dict[str, Callable[..., Any]] = {
    "repr": repr,
    "str": str,
    "len": len,
    "iter": iter,
    "next": next,
    "bool": bool,
    "hash": hash,
    "contains": operator.contains,
    "getitem": operator.getitem,
    "setitem": operator.setitem,
    "delitem": operator.delitem,
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "dir": lambda o: sorted(dir(o)),
}


class SandboxError(Exception):
    """The sandbox process could not start, died, or spoke out of turn."""


class RemoteError(Exception):
    """An exception of a type that is not a built-in, raised on the other side (its text says which)."""


def _is_data_type(t: type) -> bool:
    mod = getattr(t, "__module__", "") or ""
    if mod.startswith(_PRIVATE_MODULES) or "<locals>" in getattr(t, "__qualname__", ""):
        return False
    if dataclasses.is_dataclass(t) or issubclass(t, Enum):
        return True
    if issubclass(t, tuple) and hasattr(t, "_fields"):
        return True
    if any(c.__name__ == "BaseModel" and c.__module__.startswith("pydantic") for c in t.__mro__):
        return True
    return mod.split(".")[0] in _DATA_MODULES


def _importable_by_name(obj: Any) -> bool:
    """A class or function the other side can import by name (pickle's global lookup)."""
    mod = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    if not isinstance(mod, str) or not isinstance(qual, str) or "<" in qual:
        return False
    if mod.startswith(_PRIVATE_MODULES):
        return False
    m = sys.modules.get(mod)
    target: Any = m
    for part in qual.split("."):
        target = getattr(target, part, None)
    return target is obj


def _kind(obj: Any) -> str:
    if isinstance(obj, type):
        return "class"
    if type(obj).__name__ == "module":
        return "module"
    return "callable" if callable(obj) else "object"


def _reentrant_lock() -> Any:
    """A reentrant lock per thread of control: eventlet's green one when eventlet runs without patching
    ``thread`` (the controller: green threads share one OS thread, so an OS lock would let two of them
    write a request at once), else :class:`threading.RLock`."""
    if "eventlet" in sys.modules:
        from eventlet import patcher

        if not patcher.is_monkey_patched("thread"):
            from eventlet.green import threading as green_threading

            return green_threading.RLock()
    return threading.RLock()


class Channel:
    """One end of the symmetric RPC: owns the objects it handed out, proxies those it was handed."""

    def __init__(self, rfd: int, wfd: int, student_file: Path | None = None) -> None:
        self.rfd, self.wfd = rfd, wfd
        self.student_file = student_file
        self.objects: dict[int, Any] = {}
        self._ids: dict[int, int] = {}
        self._proxies: dict[int, RemoteObject] = {}
        self._next = itertools.count(1)
        self._rid = itertools.count(1)
        self._types: dict[type, bool] = {}
        self.lock = _reentrant_lock()
        self.broken: str | None = None

    # -- wire --------------------------------------------------------------------------------------------

    def _dumps(self, msg: Any) -> bytes:
        buf = io.BytesIO()
        _Pickler(buf, self).dump(msg)
        return buf.getvalue()

    def _loads(self, data: bytes) -> Any:
        return _Unpickler(io.BytesIO(data), self).load()

    def send(self, msg: Any) -> None:
        data = self._dumps(msg)
        view = memoryview(FRAME.pack(len(data)) + data)
        while view:
            n = os.write(self.wfd, view)
            view = view[n:]

    def _read(self, n: int, deadline: float | None) -> bytes:
        chunks: list[bytes] = []
        while n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                    raise SandboxError("no answer from the sandbox process in time")
            chunk = os.read(self.rfd, min(n, 1 << 20))
            if not chunk:
                raise SandboxError("the process running the submission ended")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv(self, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        (size,) = FRAME.unpack(self._read(FRAME.size, deadline))
        if size > MAX_FRAME:
            raise SandboxError(f"frame of {size} bytes from the sandbox")
        return self._loads(self._read(size, deadline))

    # -- handles -----------------------------------------------------------------------------------------

    def _register(self, obj: Any) -> int:
        hid = self._ids.get(id(obj))
        if hid is None or self.objects.get(hid) is not obj:
            hid = next(self._next)
            self.objects[hid] = obj
            self._ids[id(obj)] = hid
        return hid

    def _persistent_id(self, obj: Any) -> Any:
        t = type(obj)
        if t in _PLAIN:
            return None
        if t is Blocked:  # a reserved name never leaves the sandbox, not even as a handle
            obj._refuse()
        if t is _BoundMethodMarker:
            return ("method", ("ref", obj.hid, "object", "object"), obj.name)
        if isinstance(obj, RemoteObject):
            ch, hid = object.__getattribute__(obj, "_ch"), object.__getattribute__(obj, "_hid")
            if ch is not self:
                raise SandboxError("a proxy of an earlier sandbox process cannot be sent")
            return ("home", hid)
        if isinstance(obj, type) or callable(obj):
            if (isinstance(obj, type) and _is_data_type(obj)) or _importable_by_name(obj):
                return None  # pickled by name
            return ("ref", self._register(obj), _kind(obj), getattr(obj, "__qualname__", t.__qualname__))
        if t.__name__ == "module":
            return ("ref", self._register(obj), "module", obj.__name__)
        data = self._types.get(t)
        if data is None:
            data = self._types[t] = _is_data_type(t)
        if data:
            return None
        return ("ref", self._register(obj), _kind(obj), t.__qualname__)

    def _reducer_override(self, obj: Any) -> Any:
        name = type(obj).__name__
        if name in ("CIMultiDictProxy", "MultiDictProxy"):  # read-only views: send a copy
            import multidict

            cls = multidict.CIMultiDict if name.startswith("CI") else multidict.MultiDict
            return (cls, (list(obj.items()),))
        if name == "mappingproxy":
            return (dict, (dict(obj),))
        return NotImplemented

    def _persistent_load(self, pid: Any) -> Any:
        tag = pid[0]
        if tag == "home":
            try:
                return self.objects[pid[1]]
            except KeyError:
                raise SandboxError(f"unknown handle {pid[1]}") from None
        if tag == "ref":
            _, hid, kind, desc = pid
            proxy = self._proxies.get(hid)
            if proxy is None:
                cls = {"class": RemoteClass, "callable": RemoteCallable}.get(kind, RemoteObject)
                proxy = self._proxies[hid] = cls(self, hid, kind, desc)
            return proxy
        if tag == "method":
            _, owner, name = pid
            return RemoteMethod(self._persistent_load(owner), name)
        raise SandboxError(f"unknown persistent id {pid!r}")

    # -- requests ----------------------------------------------------------------------------------------

    def request(self, op: str, *args: Any) -> Any:
        """Send one request and serve the peer's requests (callbacks) until its answer arrives."""
        with self.lock:
            if self.broken:
                raise SandboxError(f"the sandbox is no longer usable ({self.broken})")
            rid = next(self._rid)
            try:
                self.send(("req", rid, op, args))
                while True:
                    msg = self.recv()
                    if msg[0] == "req":
                        self._serve(msg)
                        continue
                    if msg[1] != rid:
                        raise SandboxError(f"answer {msg[1]} to request {rid}")
                    break
            except BaseException as e:
                self.broken = f"{type(e).__name__}: {e}"
                raise
        if msg[0] == "ok":
            return msg[2]
        raise _rebuild(msg[2])

    def _serve(self, msg: Any) -> None:
        _, rid, op, args = msg
        try:
            value = self._execute(op, args)
            reply = ("ok", rid, value)
            data_ok = True
        except Exception as e:  # noqa: BLE001 - handed back to the caller
            reply, data_ok = ("err", rid, self._describe(e)), False
        except BaseException as e:
            if not self.serving_student:
                raise  # the grader's own time limit: unwinds the grader
            reply, data_ok = ("err", rid, self._describe(e)), False
        try:
            self.send(reply)
        except Exception as e:  # noqa: BLE001 - the value could not travel: say why instead
            if not data_ok:
                raise
            self.send(("err", rid, self._describe(e)))

    serving_student = False

    def _execute(self, op: str, args: tuple[Any, ...]) -> Any:
        if op == "getattr":
            obj, name = args
            value = getattr(obj, name)
            if getattr(value, "__self__", None) is obj and callable(value) and not isinstance(obj, type):
                return _BoundMethodMarker(self._register(obj), name)
            return value
        if op == "setattr":
            obj, name, value = args
            setattr(obj, name, value)
            return None
        if op == "call":
            fn, a, kw = args
            return fn(*a, **kw)
        if op == "callmethod":
            obj, name, a, kw = args
            return getattr(obj, name)(*a, **kw)
        if op == "op":
            obj, name, a = args
            return _OPS[name](obj, *a)
        if op == "load":
            return self.load(*args)
        raise SandboxError(f"unknown request {op!r}")

    def load(self, path: str, name: str) -> Any:
        raise SandboxError("this side loads no modules")

    def _describe(self, e: BaseException) -> dict[str, Any]:
        t = type(e)
        where = ""
        if self.student_file is not None:
            target = str(self.student_file.resolve())
            for fs in reversed(traceback.extract_tb(e.__traceback__)):
                if fs.filename and os.path.realpath(fs.filename) == target:
                    where = f" (at {self.student_file.name}:{fs.lineno} in {fs.name})"
                    break
            if not where and isinstance(e, SyntaxError) and e.filename:
                if os.path.realpath(e.filename) == target:
                    where = f" (at {self.student_file.name}:{e.lineno})"
        args: Any = e.args
        try:
            self._dumps(args)
        except Exception:  # noqa: BLE001 - fall back to text
            args = tuple(str(a) for a in e.args)
        return {
            "type": (t.__module__, t.__qualname__),
            "args": args,
            "text": traceback.format_exception_only(t, e)[-1].strip(),
            "where": where,
            "tb": "".join(traceback.format_exception(t, e, e.__traceback__)),
        }


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, ch: Channel) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.ch = ch

    def persistent_id(self, obj: Any) -> Any:
        return self.ch._persistent_id(obj)

    def reducer_override(self, obj: Any) -> Any:
        return self.ch._reducer_override(obj)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, ch: Channel) -> None:
        super().__init__(file)
        self.ch = ch

    def persistent_load(self, pid: Any) -> Any:
        return self.ch._persistent_load(pid)


class _BoundMethodMarker:
    """Answer to a lookup of a bound method: the caller makes a :class:`RemoteMethod` (one round trip)."""

    __slots__ = ("hid", "name")

    def __init__(self, hid: int, name: str) -> None:
        self.hid, self.name = hid, name

    def __reduce__(self) -> Any:
        return (_unreachable, ())


def _unreachable() -> None:  # pragma: no cover - markers travel as persistent ids
    raise SandboxError("a method marker was unpickled by value")


def _rebuild(info: dict[str, Any]) -> BaseException:
    mod, qual = info["type"]
    cls = getattr(builtins, qual, None) if mod == "builtins" else None
    e: BaseException
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            e = cls(*info["args"])
        except Exception:  # noqa: BLE001
            e = cls(info["text"])
    else:
        e = RemoteError(info["text"])
    e.cdnlab_text = info["text"]  # type: ignore[attr-defined]
    e.cdnlab_where = info["where"]  # type: ignore[attr-defined]
    e.cdnlab_traceback = info["tb"]  # type: ignore[attr-defined]
    return e


# ---------------------------------------------------------------------------------------------------------
# proxies


class RemoteObject:
    """An object living on the other side of a :class:`Channel`."""

    __slots__ = ("_ch", "_hid", "_kind", "_desc", "__weakref__")

    def __init__(self, ch: Channel, hid: int, kind: str, desc: str) -> None:
        object.__setattr__(self, "_ch", ch)
        object.__setattr__(self, "_hid", hid)
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_desc", desc)

    def _req(self, op: str, *args: Any) -> Any:
        return object.__getattribute__(self, "_ch").request(op, self, *args)

    def __getattr__(self, name: str) -> Any:
        if name in RemoteObject.__slots__ or (
            name.startswith("__") and name.endswith("__") and name not in _REMOTE_DUNDERS
        ):
            raise AttributeError(name)
        return self._req("getattr", name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._req("setattr", name, value)

    def _op(self, name: str, *args: Any) -> Any:
        return self._req("op", name, args)

    def __repr__(self) -> str:
        try:
            return str(self._op("repr"))
        except Exception:  # noqa: BLE001 - a broken sandbox must not break error messages
            return f"<{object.__getattribute__(self, '_desc')} in the sandbox>"

    def __str__(self) -> str:
        return str(self._op("str"))

    def __len__(self) -> int:
        return int(self._op("len"))

    def __iter__(self) -> Any:
        return self._op("iter")

    def __next__(self) -> Any:
        return self._op("next")

    def __bool__(self) -> bool:
        return bool(self._op("bool"))

    def __hash__(self) -> int:
        return int(self._op("hash"))

    def __contains__(self, item: Any) -> bool:
        return bool(self._op("contains", item))

    def __getitem__(self, key: Any) -> Any:
        return self._op("getitem", key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._op("setitem", key, value)

    def __delitem__(self, key: Any) -> None:
        self._op("delitem", key)

    def __eq__(self, other: object) -> Any:
        return self._op("eq", other)

    def __ne__(self, other: object) -> Any:
        return self._op("ne", other)

    def __lt__(self, other: Any) -> Any:
        return self._op("lt", other)

    def __le__(self, other: Any) -> Any:
        return self._op("le", other)

    def __gt__(self, other: Any) -> Any:
        return self._op("gt", other)

    def __ge__(self, other: Any) -> Any:
        return self._op("ge", other)

    def __dir__(self) -> Iterable[str]:
        return list(self._op("dir"))


class RemoteCallable(RemoteObject):
    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._req("call", args, kwargs)


class RemoteClass(RemoteCallable):
    """A class on the other side; ``isinstance(proxy, type)`` holds, as plug-in loaders check it."""

    __slots__ = ()

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # noqa: D105
        return type


class RemoteMethod:
    """``proxy.method`` bound on this side: calling it is one round trip."""

    __slots__ = ("owner", "name")

    def __init__(self, owner: RemoteObject, name: str) -> None:
        self.owner, self.name = owner, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return object.__getattribute__(self.owner, "_req")("callmethod", self.name, args, kwargs)

    def __repr__(self) -> str:
        return f"<method {self.name} of {self.owner!r}>"


# ---------------------------------------------------------------------------------------------------------
# the grader's side


class Sandbox:
    """A sandbox process for one submission; :meth:`load` gives the student's module as a proxy."""

    def __init__(
        self,
        path: Path,
        module_name: str,
        reference: Iterable[str] = (),
        protected: Iterable[Path] = (),
        preload: Iterable[str] = (),
    ) -> None:
        self.path = Path(path).resolve()
        self.module_name = module_name
        self.reference = list(reference)
        self.protected = [str(Path(p).resolve()) for p in protected]
        self.preload = list(preload)
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: Channel | None = None
        self.module: Any = None

    @property
    def broken(self) -> bool:
        return (
            self.channel is None
            or self.channel.broken is not None
            or self.proc is None
            or (self.proc.poll() is not None)
        )

    def start(self) -> None:
        c_r, p_w = os.pipe()
        p_r, c_w = os.pipe()
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "contract.sandbox", str(c_r), str(c_w)],
                pass_fds=(c_r, c_w),
                stdin=subprocess.DEVNULL,
                stdout=2,  # the student's prints go to the grader's standard error
                env=env,
                cwd=root,
                start_new_session=True,
            )
        finally:
            os.close(c_r)
            os.close(c_w)
        self.channel = Channel(p_r, p_w)
        self.channel.send(
            {
                "file": str(self.path),
                "reference": self.reference,
                "protected": self.protected,
                "allowed": [str(self.path.parent)],
                "preload": self.preload,
                "graders": sorted(n for n in sys.modules if n.startswith("cdnlab_grader_")),
            }
        )
        try:
            ready = self.channel.recv(timeout=START_TIMEOUT)
        except SandboxError as e:
            status = self.proc.poll()
            self.close()
            raise SandboxError(f"the sandbox process did not start ({e}; exit status {status})") from None
        if ready[0] != "ready":
            self.close()
            raise SandboxError(f"the sandbox process failed to start: {ready[1]}")

    def load(self) -> Any:
        """Import the student's file in the sandbox; its exceptions come back as themselves."""
        if self.channel is None:
            self.start()
        assert self.channel is not None
        self.module = self.channel.request("load", str(self.path), self.module_name)
        return self.module

    def restart(self) -> Any:
        self.close()
        self.start()
        return self.load()

    def kill(self) -> None:
        """SIGKILL the sandbox's process group without waiting (safe in a signal handler)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait()
            self.proc = None
        if self.channel is not None:
            for fd in (self.channel.rfd, self.channel.wfd):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.channel.broken = self.channel.broken or "closed"
            self.channel = None
        self.module = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------------
# a submission inside a service (the network stage of a lab's grader)


class Submission(BaseModel):
    """A student's file that a service (edge, DNS server, controller, player) runs in a sandbox of its own.

    ``patch`` maps ``package.module:attr`` in the service to the student's attribute that replaces it (the
    edge's ``freshness_lifetime``, the controller's ``choose``); the proxy of the student's module is also
    registered in ``sys.modules`` as ``module``, so a dotted plug-in path (``cdnlab_student_dns_mapping:
    EcsPolicy`` as a mapping policy, ``cdnlab_student_cache_replacement:LFUDA`` as an eviction policy) loads
    it.
    """

    model_config = ConfigDict(extra="forbid")

    file: Path
    module: str = Field(pattern=r"^cdnlab_student_[a-z0-9_]+$")
    reference: list[str] = Field(default_factory=list)
    protected: list[Path] = Field(default_factory=list)
    preload: list[str] = Field(default_factory=list)
    patch: dict[str, str] = Field(default_factory=dict)


def activate(sub: Submission) -> Sandbox:
    """Start the sandbox, load the student's file, register its proxy and apply ``sub.patch``.

    Raises :class:`SandboxError` when the sandbox cannot start, the student's exception when the file does
    not import, and ValueError when a patch target does not exist; the sandbox is closed in all three cases.
    """
    import importlib

    sandbox = Sandbox(sub.file, sub.module, sub.reference, sub.protected, sub.preload)
    try:
        sandbox.start()
        mod = sandbox.load()
        for target, attr in sub.patch.items():
            modname, sep, name = target.partition(":")
            if not sep:
                raise ValueError(f"submission patch {target!r} must look like 'package.module:attr'")
            main = sys.modules.get("__main__")
            if getattr(getattr(main, "__spec__", None), "name", None) == modname:
                owner = main  # python -m that.module: its code runs as __main__, not under its name
            else:
                owner = importlib.import_module(modname)
            if not hasattr(owner, name):
                raise ValueError(f"submission patch {target!r}: {modname} has no {name}")
            setattr(owner, name, getattr(mod, attr))
        sys.modules[sub.module] = mod
    except BaseException:
        sandbox.close()
        raise
    return sandbox


# ---------------------------------------------------------------------------------------------------------
# the sandbox's side


def load_file(path: str | Path, name: str) -> ModuleType:
    """Import the file ``path`` as module ``name`` (registered in ``sys.modules``; removed if it fails)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def describe_load_error(e: BaseException) -> str:
    """One line for an exception from :func:`activate`: the student's exception with file and line when it
    came back from the sandbox, else ``Type: message``."""
    if hasattr(e, "cdnlab_text"):
        return str(e.cdnlab_text) + str(getattr(e, "cdnlab_where", ""))
    return f"{type(e).__name__}: {e}"


class _SandboxChannel(Channel):
    serving_student = True

    def load(self, path: str, name: str) -> Any:
        return load_file(path, name)


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def child_main(argv: list[str]) -> int:
    rfd, wfd = int(argv[0]), int(argv[1])
    _die_with_parent()
    config = Channel(rfd, wfd).recv()
    student = Path(config["file"])
    ch = _SandboxChannel(rfd, wfd, student)
    try:
        from contract import import_guard as grade_guard

        guard = grade_guard.install(
            grade_guard.Reference.parse(config["reference"]),
            [Path(p) for p in config["protected"]],
            [Path(p) for p in config["allowed"]],
        )
        import importlib

        for mod in config["preload"]:
            importlib.import_module(mod)
        for name in config.get("graders", ()):
            sys.modules[name] = grade_guard.blocked_module(name)
        sys.path.insert(0, str(student.parent))
        grade_guard.arm(guard)
    except Exception as e:  # noqa: BLE001 - reported to the grader
        ch.send(("failed", f"{type(e).__name__}: {e}"))
        return 1
    ch.send(("ready",))
    while True:
        try:
            msg = ch.recv()
        except SandboxError:
            return 0  # the grader closed the pipe
        if msg[0] != "req":
            ch.send(
                (
                    "err",
                    msg[1] if len(msg) > 1 else 0,
                    {
                        "type": ("builtins", "RuntimeError"),
                        "args": (),
                        "text": f"unexpected message {msg[0]!r}",
                        "where": "",
                        "tb": "",
                    },
                )
            )
            continue
        ch._serve(msg)


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
