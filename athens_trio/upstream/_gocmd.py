"""Running the go command: its environment, a throwaway GOPATH, and a clean death.

Both the fetcher and the lister run ``go`` through a :class:`GoRunner`, so a test can
hand them a scripted one.  The real one, :class:`GoProcessRunner`, gives each run a
fresh temporary GOPATH (module cache and build cache inside it), runs go in its own
process group, and bounds it by a timeout and by the disk its GOPATH may use.  When
the timeout fires, the disk bound is passed or the caller is cancelled the whole group
is killed with SIGKILL, so git and ssh children die with go, and the temporary directory
is removed even though the module cache inside it is read-only.  go runs under a small
reaper (``_reaper.py``) that kills the group if the server dies without a chance to
(``kill -9``): nothing go started outlives the server.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import errno
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from .._exceptions import (
    FetchTimeoutError,
    FetchTooLargeError,
    GoBinaryError,
    NotFoundError,
    UpstreamError,
)
from .._ownership import Claim, claim, dead_claims, remove_tree
from ._reaper import EXEC_FAILED, EXEC_FAILED_MARK

__all__ = [
    "RUN_DIR_PREFIX",
    "GoProcessRunner",
    "GoResult",
    "GoRunner",
    "PATH_PLACEHOLDER",
    "claim_run_dir",
    "classify_go_error",
    "scrub_paths",
    "sweep_run_dirs",
]

# Variables the go process inherits from ours, as Athens passes them: what git, ssh
# and HTTP proxies need.  Everything else comes from GoBinaryEnvVars.
_PASSTHROUGH = (
    "PATH",
    "HOME",
    "GOROOT",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)

# Go prints these when the network or the VCS host failed, not the module: such an
# error must not become a 404, or GOPROXY=ours,next would fall through to a wrong answer.
_UPSTREAM_FAULTS = re.compile(
    r"dial tcp|connection refused|connection reset|no such host|i/o timeout"
    r"|TLS handshake|tls: |x509: |server misbehaving|network is unreachable"
    r"|timed out|timeout|EOF\b|unexpected EOF|broken pipe|too many requests|rate limit"
    r"|\b429\b|\b50[0-4]\b|Internal Server Error|Bad Gateway|Service Unavailable"
    r"|executable file not found|signal: killed|out of memory|no space left on device"
    # git's (libcurl's and ssh's) words for a host it could not reach
    r"|Failed to connect|Couldn't connect to server|Could not resolve host"
    r"|Could not resolve hostname|Connection timed out|Operation timed out"
    r"|SSL certificate problem|gnutls_handshake|Empty reply from server"
    r"|returned error: 5\d\d|Network is unreachable|No route to host"
    # go's own refusal to handle a module for a newer go (GOTOOLCHAIN=local)
    r"|requires go >=",
    re.IGNORECASE,
)

# The VCS host refused us: no or wrong credentials (git asks for a username it may not
# prompt for), or an HTTP 401/403.  A refusal is a fault of ours to fix (NETRCPath,
# GithubToken), never "does not exist": a 404 would make GOPROXY=ours,direct fall
# through silently to the client's own credentials and past the proxy, hiding the fault.
# The price: a host that answers every unknown repository with a login prompt (GitHub
# does, so as not to reveal private ones) makes a mistyped path a 502 too.
_UPSTREAM_REFUSALS = re.compile(
    r"terminal prompts disabled|could not read (?:Username|Password)"
    r"|Authentication failed|Permission denied|Access denied|\b40[13]\b"
    r"|Unauthorized|Forbidden|invalid credentials|bad credentials",
    re.IGNORECASE,
)

# Go's ways of saying "this module or version does not exist".
_NOT_FOUND = re.compile(
    r"not found|unknown revision|invalid version|no matching versions|does not exist"
    r"|does not appear to be a git repository|repository .* not found|no such repository"
    r"|module declares its path as"
    r"|malformed module path|invalid pseudo-version|unrecognized import path"
    r"|disallowed version|no secure protocol found|\b404\b|\b410\b|Gone\b"
    r"|has non-.* module path|missing .* at revision|reading .* at revision",
    re.IGNORECASE,
)

#: What server paths (temporary GOPATHs, GoGetDir, homes) become in error messages.
PATH_PLACEHOLDER = "$WORK"

# What the request names, in any sentence go may write: versions (the query's and what
# it resolved to), and URLs (a repository's may differ from the module path).
_VERSION_TOKEN = re.compile(r"\bv\d+(?:\.\d+)*(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.]+)?")
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
# An absolute filesystem path in go's words (not a URL's path, nor ``i/o``): go names
# only server paths (its cache, GOPATH, a file:// repository, .netrc), never a client's.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~$])/[^\s'\"():,;]+")


def scrub_paths(text: str, private_paths: Sequence[str] = ()) -> str:
    """``text`` with every server path in it replaced by :data:`PATH_PLACEHOLDER`: any
    absolute path of two elements or more, and anything under ``private_paths``."""
    roots = tuple(p.rstrip("/") for p in private_paths if p.strip("/"))

    def replace(match: re.Match[str]) -> str:
        path = match.group()
        if path.strip("/").count("/") >= 1 or path.startswith(roots):
            return PATH_PLACEHOLDER
        return path

    return _ABSOLUTE_PATH.sub(replace, text)


def _message_proper(text: str, module: str, query: str) -> str:
    """go's own words in ``text``: without the module path (nor any path it lies
    under: a repository root), the query, versions, URLs and filesystem paths, which
    spell the request and must not decide the answer (``example.com/timeout`` exists
    or not, and its repository may be ``/srv/git/timeout``)."""
    text = _ABSOLUTE_PATH.sub(" ", _URL.sub(" ", text))
    elements = module.split("/") if module else []
    for end in range(len(elements), 0, -1):
        text = text.replace("/".join(elements[:end]), " ")
    if query:
        text = text.replace(query, " ")
    return _VERSION_TOKEN.sub(" ", text)


def classify_go_error(
    message: str,
    *,
    module: str = "",
    query: str = "",
    private_paths: Sequence[str] = (),
) -> NotFoundError | UpstreamError:
    """Map the ``Error`` go reported for ``module@query`` to "does not exist" or
    "upstream failed", on go's words alone (see :func:`_message_proper`).

    Network and host faults and refusals win over not-found wording (go wraps both in
    the same sentence), and anything unrecognised is a fault, never a 404.  The
    exception's message has every server path in ``private_paths`` (and any temporary
    directory of ours) replaced by :data:`PATH_PLACEHOLDER`.
    """
    text = scrub_paths(message.strip(), private_paths) or "go failed without a message"
    words = _message_proper(text, module, query)
    if _UPSTREAM_FAULTS.search(words) or _UPSTREAM_REFUSALS.search(words):
        return UpstreamError(text)
    if _NOT_FOUND.search(words):
        return NotFoundError(text)
    return UpstreamError(text)


@dataclass(frozen=True)
class GoResult:
    returncode: int
    stdout: bytes
    stderr: bytes
    #: The server paths the run used (its temporary GOPATH, GoGetDir, HOME): what
    #: :func:`scrub_paths` keeps out of the messages clients see.
    private_paths: tuple[str, ...] = ()


class GoRunner(abc.ABC):
    """What the fetcher and the lister need of go: run it, and keep what it wrote
    (the files its output names) until they are done with it."""

    @abc.abstractmethod
    def run(
        self, args: Sequence[str], *, timeout: float, what: str
    ) -> contextlib.AbstractAsyncContextManager[GoResult]:
        """Run ``go <args>`` under ``timeout`` seconds; the result's files live until the
        block exits.  ``what`` names the run in errors.

        ``args`` are passed as argv, never through a shell; callers put ``--`` or a
        validated ``path@version`` last so nothing can turn into a flag.
        Raises FetchTimeoutError on timeout, GoBinaryError if go cannot be started.
        """


class GoProcessRunner(GoRunner):
    """Runs the go binary as a process, each run in a fresh temporary GOPATH.

    ``env`` is what go gets on top of the variables passed through from ``environ``
    (GoBinaryEnvVars and the like); ``temp_root`` is where the temporary GOPATHs go
    (None: the system temp dir); ``home`` is the private home holding .netrc/.hgrc;
    ``max_bytes`` (None: unbounded) is the disk one run may use in its GOPATH.
    """

    def __init__(
        self,
        go_binary: str,
        *,
        env: Mapping[str, str] | None = None,
        temp_root: str | Path | None = None,
        home: Path | None = None,
        environ: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.go_binary = go_binary
        self.temp_root = temp_root
        self.max_bytes = max_bytes
        _lifeline()  # now, not at the first run: a server's descriptors settle at start
        environ = os.environ if environ is None else environ
        self._base_env = {k: environ[k] for k in _PASSTHROUGH if k in environ}
        if home is not None:
            # The private home that holds .netrc/.hgrc (see _credentials).
            self._base_env["HOME"] = str(home)
            self._base_env["NETRC"] = str(home / ".netrc")
        # An ssh agent is passed on only if its socket is really there (as Athens does).
        agent = environ.get("SSH_AUTH_SOCK", "")
        if agent and stat.S_ISSOCK(_stat_mode(agent)):
            self._base_env["SSH_AUTH_SOCK"] = agent
        self._overrides = dict(env or {})

    def with_env(
        self, env: Mapping[str, str], *, prepend_path: Path | None = None
    ) -> GoProcessRunner:
        """This runner with ``env`` on top of its environment, and ``prepend_path``
        first in PATH (for toolchain switching, see upstream._toolchain)."""
        other = copy.copy(self)
        other._overrides = {**self._overrides, **env}
        if prepend_path is not None:
            path = other._overrides.get("PATH", self._base_env.get("PATH", os.defpath))
            other._overrides["PATH"] = f"{prepend_path}{os.pathsep}{path}"
        return other

    def environment(self, gopath: Path) -> dict[str, str]:
        """The go process's whole environment for a run with this GOPATH."""
        env = dict(self._base_env)
        env.update(
            GOPATH=str(gopath),
            GOMODCACHE=str(gopath / "pkg" / "mod"),
            GOCACHE=str(gopath / "cache"),
            CGO_ENABLED="0",
            GO111MODULE="on",
            GOWORK="off",
            GIT_TERMINAL_PROMPT="0",
        )
        env.update(self._overrides)
        return env

    async def check(self) -> str:
        """Run ``go version`` once; return its output or raise GoBinaryError."""

        async def kill_group(process: trio.Process) -> None:
            # Cancelled (a stop while starting): go and whatever it started (a
            # toolchain download) go at once, as a fetch's group does.
            _killpg_quietly(process.pid)

        try:
            result = await trio.run_process(
                [self.go_binary, "version"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={**self._base_env, **self._overrides},
                cwd="/",  # not inside some project whose go.mod asks for another toolchain
                start_new_session=True,  # its own process group, for killpg
                deliver_cancel=kill_group,
            )
        except OSError as exc:
            raise GoBinaryError(
                f"cannot run the go binary {self.go_binary!r} (GoBinary / GO_BINARY_PATH): "
                f"{exc.strerror or exc}"
            ) from exc
        if result.returncode != 0:
            raise GoBinaryError(
                f"{self.go_binary} version failed: {result.stderr.decode(errors='replace')}"
            )
        return result.stdout.decode().strip()

    @contextlib.asynccontextmanager
    async def workspace(self) -> AsyncIterator[Path]:
        """A fresh temporary directory (the run's cwd and GOPATH root), removed on exit
        whatever happens, even when the exit is a cancellation."""
        directory = Path(
            await trio.to_thread.run_sync(
                lambda: tempfile.mkdtemp(prefix="athens-trio-", dir=self.temp_root)
            )
        )
        try:
            yield directory
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(remove_tree, directory)

    @contextlib.asynccontextmanager
    async def run(
        self,
        args: Sequence[str],
        *,
        timeout: float,  # noqa: ASYNC109
        what: str,
    ) -> AsyncIterator[GoResult]:
        async with self.workspace() as workspace:
            yield await self._run_in(args, workspace=workspace, timeout=timeout, what=what)

    # The timeout is ours, not the caller's scope, so it becomes FetchTimeoutError.
    async def _run_in(
        self,
        args: Sequence[str],
        *,
        workspace: Path,
        timeout: float,  # noqa: ASYNC109
        what: str,
    ) -> GoResult:
        """:meth:`run` in a given ``workspace`` (see :meth:`workspace`)."""
        gopath = workspace / "gopath"
        cwd = workspace / "work"
        await trio.to_thread.run_sync(_make_work_dir, cwd)
        command = [*_reaper_command(self.max_bytes), self.go_binary, *args]
        stdout_path, stderr_path = workspace / "stdout", workspace / "stderr"
        try:
            # Output goes to files in the workspace: no pipes to drain, nothing held.
            with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:  # noqa: ASYNC230
                process = await trio.lowlevel.open_process(
                    command,
                    cwd=cwd,
                    env=self.environment(gopath),
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,  # its own process group, for killpg
                    pass_fds=(_lifeline(),),
                )
        except OSError as exc:
            raise GoBinaryError(
                f"cannot run the go binary {self.go_binary!r}: {exc.strerror or exc}"
            ) from exc
        watch = _DiskWatch(workspace, process.pid, self.max_bytes)
        try:
            with trio.move_on_after(timeout) as deadline:
                async with trio.open_nursery() as nursery:
                    if self.max_bytes is not None:
                        nursery.start_soon(watch.run)
                    await process.wait()
                    nursery.cancel_scope.cancel()
        finally:
            # Timed out, cancelled, or done while a git it started lingers: the whole
            # group goes, and we reap go before the workspace is removed.
            _killpg_quietly(process.pid)
            with trio.CancelScope(shield=True):
                await process.wait()
                # go and git are the reaper's children, not ours: wait until the
                # SIGKILL took them too, so nothing writes in the workspace we remove.
                await trio.to_thread.run_sync(_wait_group_gone, process.pid)
        if deadline.cancelled_caught:
            raise FetchTimeoutError(f"{what}: go ran past its {timeout:g} s timeout")
        assert process.returncode is not None
        stderr_bytes = await trio.Path(stderr_path).read_bytes()
        stdout_bytes = await trio.Path(stdout_path).read_bytes()
        if process.returncode == EXEC_FAILED and stderr_bytes.startswith(EXEC_FAILED_MARK):
            reason = stderr_bytes.decode(errors="replace").rpartition(": ")[2].strip()
            raise GoBinaryError(f"cannot run the go binary {self.go_binary!r}: {reason}")
        if process.returncode != 0 and await watch.reached(stderr_bytes + stdout_bytes):
            raise FetchTooLargeError(
                f"{what}: stopped after it used more than {self.max_bytes} bytes of disk "
                "(the fetch disk bound, MaxFetchBytes)"
            )
        return GoResult(
            process.returncode,
            stdout_bytes,
            stderr_bytes,
            private_paths=self.private_paths(workspace),
        )

    def private_paths(self, workspace: Path) -> tuple[str, ...]:
        """The server paths a run in ``workspace`` may name in its messages."""
        paths = [str(workspace), os.path.realpath(workspace)]
        if self.temp_root is not None:
            paths += [str(self.temp_root), os.path.realpath(self.temp_root)]
        if "HOME" in self._base_env:
            paths.append(self._base_env["HOME"])
        return tuple(paths)


@dataclass
class _DiskWatch:
    """Bounds the disk one run uses: measures its workspace every
    :data:`DISK_CHECK_INTERVAL` seconds and kills the run's group past ``max_bytes``."""

    workspace: Path
    pid: int
    max_bytes: int | None
    exceeded: bool = False

    async def run(self) -> None:
        assert self.max_bytes is not None
        while not self.exceeded:
            await trio.sleep(DISK_CHECK_INTERVAL)
            used = await trio.to_thread.run_sync(disk_usage, self.workspace, abandon_on_cancel=True)
            if used > self.max_bytes:
                self.exceeded = True
                _killpg_quietly(self.pid)

    async def reached(self, output: bytes) -> bool:
        """Whether the run (which failed, saying ``output``) went past the bound: the
        watch saw it, or a file reached it: the file-size limit failed a write at once
        (EFBIG, which go reports in these words), before a watch could see it, and go
        may have removed the file since."""
        if self.max_bytes is None:
            return False
        return (
            self.exceeded
            or _FILE_TOO_LARGE in output.lower()
            or await trio.to_thread.run_sync(disk_usage, self.workspace) >= self.max_bytes
        )


# The main module of every run.  Without it go would look for a go.mod in the parents of
# the work directory (GoGetDir's), and one found there, with its go line, toolchain,
# excludes and replacements, would steer the fetch.  The path has no dot in its first
# element, so no module a client can ask for is ever this main module.
_DUMMY_GO_MOD = "module athens-trio-fetch\n"


def _make_work_dir(cwd: Path) -> None:
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / "go.mod").write_text(_DUMMY_GO_MOD)


def _stat_mode(path: str) -> int:
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


#: The directory each server process claims in GoGetDir for its fetches' GOPATHs and
#: its private home (see :mod:`athens_trio._ownership`): ``athens-trio-run-<token>``.
RUN_DIR_PREFIX = "athens-trio-run-"


def claim_run_dir(go_get_root: Path) -> Claim:
    """This process's own directory in GoGetDir, removed when released or, should the
    process die first, by the next start's :func:`sweep_run_dirs`."""
    return claim(go_get_root, RUN_DIR_PREFIX)


def sweep_run_dirs(go_get_root: Path) -> int:
    """Remove the run directories in GoGetDir whose process is gone (never a live
    one's: several servers may share GoGetDir); return how many."""
    return len(dead_claims(go_get_root, RUN_DIR_PREFIX))


#: EFBIG's words: a write went past the file-size limit the reaper set.
_FILE_TOO_LARGE = os.strerror(errno.EFBIG).lower().encode()

#: Seconds between two measures of a run's disk use (when it is bounded).
DISK_CHECK_INTERVAL = 0.25

_REAPER = Path(__file__).with_name("_reaper.py")

# This process's lifeline, by pid (a forked child needs its own).  The write end is
# never closed nor inherited: the kernel closes it when this process dies, however it
# dies, and each reaper, holding the read end, then sees its end.
_lifelines: dict[int, tuple[int, int]] = {}


def _lifeline() -> int:
    """The read end of this process's lifeline (see ``_reaper.py``)."""
    pid = os.getpid()
    if pid not in _lifelines:
        _lifelines[pid] = os.pipe()
    return _lifelines[pid][0]


def _reaper_command(max_bytes: int | None) -> list[str]:
    """The argv that runs a command under the reaper (isolated, without site: fast)."""
    return [sys.executable, "-I", "-S", str(_REAPER), str(_lifeline()), str(max_bytes or 0)]


def disk_usage(directory: Path) -> int:
    """Bytes of disk the files under ``directory`` take (allocated blocks, as ``du``)."""
    total = 0
    pending = [str(directory)]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:
            continue  # removed meanwhile, or not readable: not ours to count
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
                except OSError:
                    continue
    return total


#: How long a killed group's members may take to die (they are SIGKILLed: moments).
_GROUP_DEATH_WAIT = 5.0


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` lives (a zombie, dead but not yet reaped by
    whoever inherited it, does not)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
    return False


def _wait_group_gone(pgid: int) -> None:
    deadline = time.monotonic() + _GROUP_DEATH_WAIT
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.005)  # a worker thread's poll, bounded by the deadline


def _killpg_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
