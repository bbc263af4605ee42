"""Load on loopback: wrk where present, else a trio + httpx generator with the same mix.

:func:`load` cycles through a list of paths with ``concurrency`` connections until
``max_requests`` have been issued or ``max_seconds`` have passed, whichever is first:
both bounds always hold.  wrk runs one thread (the server under test gets the other
core of a two-core machine) and a generated Lua script that cycles the paths, stops
at the request bound and prints its summary as JSON.

:func:`burst` is different: every client runs a short sequence of requests exactly
once, all released at the same instant (the herd and memory scenarios).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

__all__ = [
    "BurstResult",
    "LoadResult",
    "burst",
    "httpx_load",
    "load",
    "parse_wrk_output",
    "wrk_script",
]

_MARK = "BENCH_JSON "
# Every client gets its own connection: httpx's shared pool costs more client CPU per
# request the more connections it holds, which made the generator, not the server, the
# bottleneck at 100+ clients.  One TLS context for all (loopback is plain HTTP anyway),
# and no proxy settings from the environment: the target is 127.0.0.1, always.
_SSL = ssl.create_default_context()


def _client(base_url: str, request_timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=request_timeout,
        verify=_SSL,
        trust_env=False,
    )


@contextlib.asynccontextmanager
async def _clients(
    base_url: str, count: int, request_timeout: float
) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(_client(base_url, request_timeout))
            for _ in range(count)
        ]


@dataclass
class LoadResult:
    tool: str
    requests: int
    """Completed requests (an answer of any status)."""
    errors: int
    """Non-200 answers plus connection, read, write and timeout errors."""
    bytes: int
    seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        """MB/s in MiB (2**20 bytes) per second."""
        return self.bytes / self.seconds / 2**20 if self.seconds > 0 else 0.0

    def details(self) -> dict[str, float | int | str | None]:
        return {
            "tool": self.tool,
            "requests": self.requests,
            "errors": self.errors,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 4),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }


def wrk_script(paths: Sequence[str], limit: int) -> str:
    """wrk's Lua: cycle ``paths``, stop after ``limit`` requests, print a JSON summary.

    The request bound is counted in ``request()``, not ``response()``: a ``response``
    function would make wrk buffer every body, 50 MiB zips included.  wrk's own
    duration covers its whole ``-d`` even when the thread stopped early, so the thread
    clocks itself (LuaJIT's ffi: clock_gettime) from its first request to its stop.
    """
    quoted = ", ".join(json.dumps(p) for p in paths)
    return f"""\
local paths = {{ {quoted} }}
local limit = {limit}
local issued = 0
local threads = {{}}

local have_clock, ffi = pcall(require, "ffi")
if have_clock then
    have_clock = pcall(ffi.cdef, [[
        typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec;
        int clock_gettime(int clk_id, bench_timespec *tp);
    ]])
end
local function now_us()
    if not have_clock then return -1 end
    local ts = ffi.new("bench_timespec")
    ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

setup = function(thread)
    table.insert(threads, thread)
end

request = function()
    issued = issued + 1
    if issued == 1 then
        wrk.thread:set("first_us", now_us())
    end
    if issued > limit then
        wrk.thread:set("stopped_us", now_us())
        wrk.thread:stop()
    end
    return wrk.format("GET", paths[(issued - 1) % #paths + 1])
end

done = function(summary, latency, requests)
    local e = summary.errors
    local elapsed = summary.duration
    local first = threads[1]:get("first_us")
    local stopped = threads[1]:get("stopped_us")
    if first and stopped and first >= 0 and stopped > first then
        elapsed = stopped - first
    end
    io.write(string.format(
        '{_MARK}{{"requests": %d, "bytes": %d, "duration_us": %d, "connect": %d, '
        .. '"read": %d, "write": %d, "status": %d, "timeout": %d, '
        .. '"p50_us": %d, "p99_us": %d, "wrk_duration_us": %d}}\\n',
        summary.requests, summary.bytes, elapsed, e.connect, e.read, e.write,
        e.status, e.timeout, latency:percentile(50), latency:percentile(99),
        summary.duration))
end
"""


def parse_wrk_output(text: str) -> LoadResult:
    """The summary our Lua ``done`` printed, from wrk's whole output."""
    for line in text.splitlines():
        if line.startswith(_MARK):
            data = json.loads(line[len(_MARK) :])
            errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
            return LoadResult(
                tool="wrk",
                requests=int(data["requests"]),
                errors=int(errors),
                bytes=int(data["bytes"]),
                seconds=data["duration_us"] / 1e6,
                p50_ms=data["p50_us"] / 1e3,
                p99_ms=data["p99_us"] / 1e3,
            )
    raise RuntimeError(f"wrk printed no summary:\n{text[-2000:]}")


async def wrk_load(
    wrk: str,
    base_url: str,
    paths: Sequence[str],
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    workdir: Path,
) -> LoadResult:
    script = workdir / "bench.lua"
    await trio.Path(script).write_text(wrk_script(paths, max_requests))
    seconds = max(1, math.ceil(max_seconds))
    command = [
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds}s",
        f"--timeout={seconds + 10}s",
        "-s",
        str(script),
        base_url,
    ]
    done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}:\n{output[-2000:]}")
    return parse_wrk_output(output)


async def httpx_load(
    base_url: str,
    paths: Sequence[str],
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
) -> LoadResult:
    """wrk's job in Python: ``concurrency`` workers share one request counter."""
    counter = itertools.count()
    latencies: list[float] = []
    totals = {"requests": 0, "errors": 0, "bytes": 0}

    async def worker(client: httpx.AsyncClient) -> None:
        while (index := next(counter)) < max_requests:
            started = trio.current_time()
            try:
                async with client.stream("GET", paths[index % len(paths)]) as response:
                    async for chunk in response.aiter_raw():
                        totals["bytes"] += len(chunk)
                    ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(trio.current_time() - started)
            totals["requests"] += ok
            totals["errors"] += not ok

    async with _clients(base_url, concurrency, max_seconds + 30) as clients:
        started = trio.current_time()
        with trio.move_on_after(max_seconds):
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(worker, client)
        elapsed = trio.current_time() - started
    latencies.sort()
    return LoadResult(
        tool="httpx",
        requests=totals["requests"] + totals["errors"],
        errors=totals["errors"],
        bytes=totals["bytes"],
        seconds=elapsed,
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
    )


def _percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index] * 1e3


async def load(
    base_url: str,
    paths: Sequence[str],
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    wrk: str | None,
    workdir: Path,
) -> LoadResult:
    """Bounded load with wrk if given, else with the httpx generator."""
    if wrk:
        return await wrk_load(
            wrk,
            base_url,
            paths,
            concurrency=concurrency,
            max_requests=max_requests,
            max_seconds=max_seconds,
            workdir=workdir,
        )
    return await httpx_load(
        base_url,
        paths,
        concurrency=concurrency,
        max_requests=max_requests,
        max_seconds=max_seconds,
    )


@dataclass
class BurstResult:
    clients: int
    ok: int = 0
    errors: int = 0
    bytes: int = 0
    seconds: float = 0.0
    """From the release of the clients until the last one finished."""
    first_seconds: float = 0.0
    """From the release until the last client had its first answer (in the herd: until
    everyone's ``.info`` came back, the fetch and its waiting included)."""
    error_samples: list[str] = field(default_factory=list)

    def details(self) -> dict[str, float | int | list[str]]:
        return {
            "clients": self.clients,
            "ok": self.ok,
            "errors": self.errors,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 4),
            "first_seconds": round(self.first_seconds, 4),
            "error_samples": self.error_samples[:5],
        }


async def burst(
    base_url: str,
    sequence: Sequence[str],
    *,
    clients: int,
    timeout: float,  # noqa: ASYNC109 - a bound per request, not a deadline for the call
) -> BurstResult:
    """``clients`` clients each GET every path of ``sequence`` in order, once, all
    released together.  A client is ok when every answer was a 200."""
    result = BurstResult(clients=clients)
    go = trio.Event()
    started = 0.0

    async def client_run(client: httpx.AsyncClient) -> None:
        await go.wait()
        try:
            for index, path in enumerate(sequence):
                async with client.stream("GET", path) as response:
                    async for chunk in response.aiter_raw():
                        result.bytes += len(chunk)
                    if response.status_code != 200:
                        raise RuntimeError(f"{path}: HTTP {response.status_code}")
                if index == 0:
                    elapsed = trio.current_time() - started
                    result.first_seconds = max(result.first_seconds, elapsed)
        except (httpx.HTTPError, RuntimeError) as exc:
            result.errors += 1
            result.error_samples.append(f"{type(exc).__name__}: {exc}")
        else:
            result.ok += 1

    async with _clients(base_url, clients, timeout) as each:
        async with trio.open_nursery() as nursery:
            for client in each:
                nursery.start_soon(client_run, client)
            await trio.sleep(0.05)  # let every client reach the gate
            started = trio.current_time()
            go.set()
        result.seconds = trio.current_time() - started
    return result
