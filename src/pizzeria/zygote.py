"""Service processes forked from one that has imported their libraries already.

Before a service process does anything of its own it spends more than a second of CPU importing
FastAPI, SQLAlchemy, pydantic, OpenTelemetry and the rest, and `pizzeria up` starts thirteen of
them on what may be two cores. The zygote imports the libraries once, and the supervisor has it
fork each service process: a start, and a restart after a crash, then costs the service's own
modules (about a tenth of a second) and its setup. A child imports nothing another service
would not (`_preload`): it has the modules, metrics and state of one started afresh.

The zygote is a child of the supervisor with one thread and no event loop. It reads requests as
JSON lines on its stdin (`{"id", "argv", "env", "log"}`) and answers on a pipe of its own: the
pid of each child it forked (`{"id", "pid"}`), and the exit status of each child it reaped
(`{"exit", "code"}`). A child starts a session of its own (Ctrl-C at the terminal reaches the
supervisor only, which stops the children in order), takes exactly the environment it was given,
writes to its log file, and runs `pizzeria <argv>` as `python -m pizzeria <argv>` would. The
zygote is `python -m pizzeria zygote FD`, FD the pipe it answers on. The supervisor watches
each child through a pidfd besides, so it sees a child end even if the zygote itself is gone.

Linux only (it forks a process that imported its libraries, and watches through pidfds). On
another system, with `PIZZERIA_ZYGOTE=0`, or when the zygote cannot start, the supervisor starts
each process as `python -m pizzeria serve <service>`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import hashlib
import importlib
import io
import json
import os
import select
import signal
import site
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pizzeria.kit.logging import get_logger
from pizzeria.registry import BY_NAME

log = get_logger(__name__)

#: `0` turns the zygote off: every process is started afresh.
SWITCH = "PIZZERIA_ZYGOTE"
#: How long the zygote may take to import everything before the supervisor does without it.
START_TIMEOUT_S = 60.0
#: How long a list of libraries nobody reads (another state of the code's) is kept (`_names_file`).
_NAMES_KEPT_S = 86400.0
#: A child's exit status when the zygote that forked it is gone and could not say.
UNKNOWN_EXIT = 255


def available(environ: Mapping[str, str] = os.environ) -> bool:
    if sys.platform != "linux" or environ.get(SWITCH, "1") == "0" or not hasattr(os, "pidfd_open"):
        return False
    try:  # a kernel before 5.3, or a sandbox that refuses the call
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


def _kill(pid: int) -> None:
    """Kill a child the zygote forked and has not reaped yet (so its pid is still its own)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class ZygoteGone(Exception):
    """The zygote exited (or never started): start the process afresh."""


class ForkedProcess:
    """A child the zygote forked, with what the supervisor uses of `asyncio.subprocess.Process`:
    `pid`, `returncode`, `wait()`, `send_signal()`, `kill()`."""

    def __init__(self, pid: int, zygote: Zygote) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._zygote = zygote
        self._ended = asyncio.Event()
        self._exited = False  # the pidfd said so
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already: the zygote's word on it is on its way
            self._exited = True
        else:
            asyncio.get_running_loop().add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        self._exited = True
        self._close_pidfd()
        if not self._zygote.alive:
            self._settle(UNKNOWN_EXIT)

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _settle(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._ended.set()

    def _zygote_gone(self) -> None:
        if self._exited:
            self._settle(UNKNOWN_EXIT)

    async def wait(self) -> int:
        await self._ended.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            return
        if self._pidfd is not None:  # the pidfd is this process, never a later one with its pid
            signal.pidfd_send_signal(self._pidfd, sig)
        elif not self._exited:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def forget(self) -> None:
        """Stop watching (the supervisor is done with it)."""
        self._close_pidfd()


class Zygote:
    """The supervisor's side: start the zygote, have it fork children, learn how they end."""

    def __init__(self, process: asyncio.subprocess.Process, replies: asyncio.StreamReader, imported_at: float) -> None:
        self.process = process
        self._replies = replies
        self._asked: dict[int, asyncio.Future[int]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._early: dict[int, int] = {}  # exit statuses of children not yet handed out
        self._next = 0
        self._reader: asyncio.Task[None] | None = None
        self._imported_at = imported_at  # when it began to import: an edit after it may be missed
        self.alive = True

    def outdated(self) -> bool:
        """Whether the code on disk changed since the zygote imported it: the system's own files,
        or the libraries (installing or removing a package changes the site-packages directory).
        A process started then runs the code on disk, as one started afresh would (a restart
        after an edit or an upgrade, say)."""
        try:
            return any(path.stat().st_mtime > self._imported_at for path in _code_paths())
        except OSError:  # a file moved while looked at: changed
            return True

    @classmethod
    async def start(cls, env: Mapping[str, str], timeout: float = START_TIMEOUT_S) -> Zygote | None:
        """The zygote, ready to fork (everything imported), or None if it could not be had."""
        if not available(env):
            return None
        read_end, write_end = os.pipe()
        began = time.time()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pizzeria",
                "zygote",
                str(write_end),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(write_end,),
                env=dict(env),
                start_new_session=True,
            )
        except OSError as exc:
            os.close(read_end)
            log.warning("cannot start the zygote: processes start afresh", error=str(exc))
            return None
        finally:
            os.close(write_end)
        loop = asyncio.get_running_loop()
        replies = asyncio.StreamReader(limit=1 << 20, loop=loop)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(replies), os.fdopen(read_end, "rb"))
        try:
            async with asyncio.timeout(timeout):
                first = await replies.readline()
        except TimeoutError:
            first = b""
        if json.loads(first or b"{}").get("ready") is not True:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            log.warning("the zygote did not start: processes start afresh")
            return None
        zygote = cls(process, replies, began)
        zygote._reader = asyncio.create_task(zygote._read())
        return zygote

    async def spawn(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path | None) -> ForkedProcess:
        """Fork a child that runs `pizzeria <argv>` with exactly `env`, its output appended to
        `log_path` (or where the zygote's goes)."""
        if not self.alive or self.process.stdin is None:
            raise ZygoteGone
        self._next += 1
        asked_id = self._next
        asked = asyncio.get_running_loop().create_future()
        self._asked[asked_id] = asked
        request = {"id": asked_id, "argv": list(argv), "env": dict(env), "log": str(log_path) if log_path else None}
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            await self.process.stdin.drain()
            pid = await asked
        except ConnectionError as exc:
            raise ZygoteGone from exc
        finally:
            # Given up on (cancelled, say): a child forked for it all the same is killed when
            # its pid arrives (`_read`), never left running unknown.
            self._asked.pop(asked_id, None)
        try:
            child = ForkedProcess(pid, self)
        except OSError as exc:  # no pidfd to watch it by: not this way
            _kill(pid)
            raise ZygoteGone from exc
        self._children[pid] = child
        if pid in self._early:
            child._settle(self._early.pop(pid))
        return child

    async def _read(self) -> None:
        try:
            while line := await self._replies.readline():
                reply: dict[str, Any] = json.loads(line)
                if "exit" in reply:
                    pid, code = int(reply["exit"]), int(reply["code"])
                    child = self._children.pop(pid, None)
                    if child is None:
                        self._early[pid] = code
                    else:
                        child._settle(code)
                elif "pid" in reply:
                    asked = self._asked.get(int(reply["id"]))
                    if asked is not None and not asked.done():
                        asked.set_result(int(reply["pid"]))
                    else:  # its spawn was given up on
                        _kill(int(reply["pid"]))
        finally:
            self.alive = False
            for asked in self._asked.values():
                if not asked.done():
                    asked.set_exception(ZygoteGone())
            for child in self._children.values():
                child._zygote_gone()

    async def close(self) -> None:
        """Let the zygote go (its children are stopped already, or live on by themselves)."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            async with asyncio.timeout(5):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for child in self._children.values():
            child.forget()


# -- the zygote itself ---------------------------------------------------------------------------


def _preload() -> None:
    """Import what every process would import but its own code: each library any of them
    imports. A scout, forked first, imports every process's code and names what that brought in
    besides the system's own modules; the zygote imports those. A child then imports only its
    own modules (about a tenth of a second), and so has the modules, the metrics and the state a
    process started afresh has, no other service's.

    The scout's names are kept (`_names_file`) for as long as the code and the installed
    libraries stay as they were: the next zygote imports them at once, without a scout (whose
    imports cost more than a second of a start). A stale list would cost only time: a library
    missing from it is imported by the children that use it, one no longer there is passed over."""
    kept = _names_file()
    names = _read_names(kept)
    if names is None:
        names = _scout()
        _keep_names(kept, names)
    for name in names:
        if name not in sys.modules:
            with contextlib.suppress(Exception):  # one a library loads only as a part of another
                importlib.import_module(name)
    gc.collect()
    gc.freeze()  # what was imported stays shared between the children, out of the collector's sight


def _scout() -> list[str]:
    """The libraries (and their modules, in the order they came) that every process's code
    imports, as a forked child that imported all of it finds them."""
    read_end, write_end = os.pipe()
    scout = os.fork()
    if scout == 0:
        os.close(read_end)
        try:
            for entry in BY_NAME.values():
                importlib.import_module(entry.module)
            names = [name for name in sys.modules if not name.startswith(("pizzeria", "__"))]
            with os.fdopen(write_end, "w") as out:
                out.write("\n".join(names))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as found:
        names = found.read().split()
    os.waitpid(scout, 0)
    return names


def _names_file(package: Path | None = None) -> Path | None:
    """Where the scout's names are kept for this Python, these installed libraries and this
    code: a file named by a digest of the interpreter, of each site-packages directory (an
    install or removal changes its time) and of the system's own modules (`package`'s: path,
    size, time), under `$XDG_CACHE_HOME/pizzeria/zygote` (`~/.cache` without it, or with a
    relative one); None if there is no home."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{sys.executable}\0{sys.version}".encode())
    try:
        for path in _code_paths(package):
            found = path.stat()
            digest.update(f"\0{path}:{found.st_size}:{found.st_mtime_ns}".encode())
        chosen = Path(os.environ.get("XDG_CACHE_HOME") or "")
        base = chosen if chosen.is_absolute() else Path.home() / ".cache"  # a relative one is ignored
    except (OSError, RuntimeError):  # no home to keep it in, or a file gone while looked at
        return None
    return base / "pizzeria" / "zygote" / f"libraries-{digest.hexdigest()}.txt"


def _code_paths(package: Path | None = None) -> list[Path]:
    """What decides the code a process runs: each site-packages directory (installing or
    removing a package changes its time) and the system's own modules (`package`'s)."""
    package = package or Path(__file__).resolve().parent
    places = [Path(entry) for entry in site.getsitepackages() if Path(entry).is_dir()]
    return [*places, *sorted(package.rglob("*.py"))]


def _read_names(path: Path | None) -> list[str] | None:
    """The kept list (its time refreshed: a list in use is not pruned), or None if there is
    none, or it is empty."""
    if path is None:
        return None
    try:
        names = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return None
    with contextlib.suppress(OSError):  # a list that cannot be touched is used all the same
        os.utime(path)
    return names or None


def _keep_names(path: Path | None, names: Sequence[str]) -> None:
    """Write the list whole or not at all (another zygote may be reading or writing it), and
    prune the lists of other states of the code that nobody read for `_NAMES_KEPT_S`."""
    if path is None or not names:
        return
    partial = path.with_name(f"{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("w", encoding="utf-8") as out:
            out.write("\n".join(names))
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except OSError:  # nowhere to keep it: the next start sends a scout again
        with contextlib.suppress(OSError):
            partial.unlink()
        return
    stale = time.time() - _NAMES_KEPT_S
    for other in path.parent.glob("libraries-*"):
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove
            if other != path and other.stat().st_mtime < stale:
                other.unlink()


def _say(reply: Any, what: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the supervisor is gone: its stdin ends the zygote too
        reply.write(json.dumps(what) + "\n")


def _reap(reply: Any) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _say(reply, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _become(request: dict[str, Any], close: Sequence[int], run: Callable[[list[str]], object]) -> None:
    """In the forked child: become the process `python -m pizzeria <argv>` would have been, and
    exit with its status (never returns)."""
    code = 1
    try:
        # A new interpreter's signals: SIGINT raises KeyboardInterrupt; SIGPIPE and SIGXFSZ stay
        # ignored (a write to a closed connection raises, it does not kill); the rest default.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setsid()
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        if request.get("log"):
            out = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.close(out)
        # What `PYTHONUNBUFFERED` would have given a new interpreter: every line out at once.
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(line_buffering=True)
        os.environ.clear()
        os.environ.update(request["env"])
        argv = [str(a) for a in request["argv"]]
        sys.argv = ["pizzeria", *argv]
        code = _run(run, argv)
        # What the interpreter does at its end: join the threads that keep it alive, run atexit.
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        if code < 0:  # as the interpreter ends on an uncaught KeyboardInterrupt: by the signal
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code)


def _run(run: Callable[[list[str]], object], argv: list[str]) -> int:
    """`run(argv)`'s exit status, as the interpreter would make it of how it ended."""
    try:
        run(argv)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def main(reply_fd: int, run: Callable[[list[str]], object]) -> None:
    """The zygote's life: import everything, then fork a child for each request, in which `run`
    (the `pizzeria` command's `main`) is given the request's arguments."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor ends it by closing its stdin
    _preload()
    reply = os.fdopen(reply_fd, "w", buffering=1)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    _say(reply, {"ready": True})
    pending = b""
    while True:
        try:
            ready, _, _ = select.select([0, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
            _reap(reply)
        if 0 not in ready:
            continue
        data = os.read(0, 1 << 16)
        if not data:
            break  # the supervisor is done with it (or gone)
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            request = json.loads(line)
            sys.stdout.flush()  # nothing of the zygote's own output written twice
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _become(request, (reply_fd, wake_r, wake_w), run)
            _say(reply, {"id": request["id"], "pid": pid})
    _reap(reply)
