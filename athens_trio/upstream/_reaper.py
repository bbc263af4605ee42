"""Run a command so that it, and everything it starts, dies with the server.

``python -I -S _reaper.py <lifeline fd> <max file bytes> <command> [args...]``, started by
:class:`~athens_trio.upstream.GoProcessRunner` as the leader of a new process group,
never by hand.  It runs ``command`` (go) in its own group and waits for either of:

- go's exit: it exits with go's status (a signal's death as ``128 + signal``); the
  runner then kills what go left in the group (a lingering git);
- the end of the lifeline, a pipe whose only write end the server holds: the kernel
  closes it when the server dies in any way, ``kill -9`` included, and the reaper
  then kills its whole group, go and go's git and ssh children with it.

A ``max file bytes`` other than 0 limits every file go and its children write
(``RLIMIT_FSIZE``), a hard edge under the runner's watch of the whole GOPATH.

A parent-death signal alone would not do: go's children do not inherit it, and on Linux
it follows the *thread* that forked, which for trio is a worker thread that exits when
idle.  go gets one anyway (``SIGKILL`` when the reaper goes), so a reaper killed on its
own does not leave go running.

Standard library only, no ``site``, and few imports: it starts in about 14 ms.
"""

from __future__ import annotations

# The C module, not ``signal`` (which imports enum), and ctypes only in the child: the
# reaper starts once per go run, and those imports were half its start (29 ms -> 14 ms).
import _signal as signals  # type: ignore[import-not-found]
import os
import resource
import select
import sys

#: What the reaper exits with, and how its stderr starts, when the command cannot run.
EXEC_FAILED = 127
EXEC_FAILED_MARK = b"athens-trio-reaper: cannot run "

_PR_SET_PDEATHSIG = 1


def _kill_group() -> None:
    os.killpg(0, signals.SIGKILL)  # this process included: nothing is left to do


def _start(command: list[str], reaper: int, max_file_bytes: int) -> int:
    """Fork and exec ``command``; its pid, or raise OSError if it could not run."""
    errors_read, errors_write = os.pipe()  # close-on-exec: EOF once exec succeeded
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(errors_read)
            try:
                import ctypes

                ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signals.SIGKILL, 0, 0, 0)
            except (ImportError, OSError, AttributeError):
                pass
            if os.getppid() != reaper:
                os._exit(EXEC_FAILED)
            if max_file_bytes:
                resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(errors_write, (exc.strerror or str(exc)).encode())
        finally:
            os._exit(EXEC_FAILED)
    os.close(errors_write)
    with open(errors_read, "rb") as errors:
        failure = errors.read()
    if failure:
        os.waitpid(pid, 0)
        raise OSError(failure.decode(errors="replace"))
    return pid


def _wait(pid: int, lifeline: int) -> int:
    """Wait for ``pid`` to exit (its wait status) unless the lifeline ends first."""
    try:
        exited = os.pidfd_open(pid)
        timeout: float | None = None
    except (OSError, AttributeError):  # an old kernel: poll the child instead
        exited, timeout = lifeline, 0.2
    while True:
        readable, _, _ = select.select([lifeline, exited], [], [], timeout)
        if lifeline in readable and not os.read(lifeline, 1):
            _kill_group()
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status


def main(argv: list[str]) -> int:
    lifeline, max_file_bytes = int(argv[1]), int(argv[2])
    command = argv[3:]
    os.set_inheritable(lifeline, False)  # go must not hold the server's lifeline
    # Asked to stop (an operator, a service manager): the group stops with it.
    for stop in (signals.SIGTERM, signals.SIGHUP, signals.SIGINT):
        signals.signal(stop, lambda signum, frame: _kill_group())
    try:
        pid = _start(command, os.getpid(), max_file_bytes)
    except OSError as exc:
        sys.stderr.buffer.write(EXEC_FAILED_MARK + f"{command[0]}: {exc}\n".encode())
        return EXEC_FAILED
    code = os.waitstatus_to_exitcode(_wait(pid, lifeline))
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
