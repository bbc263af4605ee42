"""Prometheus metrics (``GET /metrics``), and the fetch log.

Each server has its own :class:`Metrics` with its own ``CollectorRegistry`` (never the
process-global one), so several servers in one process count apart.  What is counted:

- **requests** (the ASGI envelope, :meth:`Metrics.observe_request`):
  ``athens_trio_http_requests_total{route,method,status}``,
  ``athens_trio_http_request_duration_seconds{route}`` (a histogram) and
  ``athens_trio_http_response_bytes_total{route}`` (body bytes sent), where ``route`` is
  ``list``, ``info``, ``mod``, ``zip``, ``latest`` or ``other`` (health, metrics, pages,
  anything else) and ``method`` ``GET``, ``HEAD`` or ``other``.
- **cache hits and misses** (:meth:`Metrics.observe_lookup`, which the download
  protocol calls on each storage lookup of ``.info``, ``.mod`` and ``.zip``, so counting
  costs no I/O): ``athens_trio_cache_hits_total{endpoint}`` and
  ``athens_trio_cache_misses_total{endpoint}``.  A hit was served as stored; a miss is a
  call that started a fetch or joined one in flight (or found that the version does not
  exist), and every ``.info`` of a query (a branch, ``latest``), which always asks
  upstream.  ``list`` and ``@latest`` always ask upstream and are not counted.
- **fetches** (a stash wrapper, :func:`observe_fetches`, inside the GoGetWorkers pool,
  so it sees each real ``go mod download`` once, never the requests that joined it):
  ``athens_trio_fetches_total{outcome}`` (``ok``, ``not_found``, ``upstream_error``,
  ``timeout``, ``error``, ``cancelled``; failures are every outcome but ``ok``),
  ``athens_trio_fetch_duration_seconds{outcome}`` and ``athens_trio_fetches_in_progress``.
  The same wrapper logs one line per fetch on ``athens_trio.fetch``: module, version,
  the version it resolved to, seconds, outcome.
- **at scrape time** (:class:`_PipelineCollector`): single-flight joins
  (``athens_trio_singleflight_joins_total``: requests spared a fetch because one was in
  flight; ``athens_trio_singleflight_in_flight``), pool occupancy
  (``athens_trio_pool_in_use{pool}``, ``athens_trio_pool_size{pool}``,
  ``athens_trio_pool_waiting{pool}`` for ``pool`` ``stash`` (GoGetWorkers) and
  ``protocol`` (ProtocolWorkers)), and connections (``athens_trio_connections_open``,
  ``athens_trio_connections_max``), plus the process collector's ``process_*``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..stash import Stasher, Wrapper
from ._routing import status_for

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .._pipeline import Pipeline
    from ._listen import ConnectionLimit

__all__ = [
    "CONTENT_TYPE",
    "Metrics",
    "observe_fetches",
    "route_label",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST

fetch_log = logging.getLogger("athens_trio.fetch")

_REQUEST_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
_FETCH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

_ROUTE_SUFFIXES = ((".info", "info"), (".mod", "mod"), (".zip", "zip"))


def route_label(path: str) -> str:
    """Which GOPROXY endpoint a path (after the PathPrefix) asks for, by its shape alone:
    ``list``, ``info``, ``mod``, ``zip``, ``latest``, else ``other``."""
    if path.endswith("/@v/list"):
        return "list"
    if path.endswith("/@latest"):
        return "latest"
    if "/@v/" in path:
        for suffix, label in _ROUTE_SUFFIXES:
            if path.endswith(suffix):
                return label
    return "other"


def _method_label(method: str) -> str:
    return method if method in ("GET", "HEAD") else "other"


class Metrics:
    """One server's metrics, in its own registry; :meth:`render` is ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "athens_trio_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "athens_trio_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route.",
            ["route"],
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        )
        self.response_bytes = Counter(
            "athens_trio_http_response_bytes",
            "Response body bytes sent, by route.",
            ["route"],
            registry=registry,
        )
        self.cache_hits = Counter(
            "athens_trio_cache_hits",
            "info/mod/zip calls for a version storage already held.",
            ["endpoint"],
            registry=registry,
        )
        self.cache_misses = Counter(
            "athens_trio_cache_misses",
            "info/mod/zip calls for a version storage did not hold (or a query): each "
            "started a fetch or joined one.",
            ["endpoint"],
            registry=registry,
        )
        self.fetches = Counter(
            "athens_trio_fetches",
            "Fetches (go mod download, then save) finished, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.fetch_seconds = Histogram(
            "athens_trio_fetch_duration_seconds",
            "How long a fetch took once it had a GoGetWorkers slot, by outcome.",
            ["outcome"],
            buckets=_FETCH_BUCKETS,
            registry=registry,
        )
        self.fetches_in_progress = Gauge(
            "athens_trio_fetches_in_progress",
            "Fetches running now.",
            registry=registry,
        )
        ProcessCollector(registry=registry)
        self.pipeline: Pipeline | None = None
        self.connections: ConnectionLimit | None = None
        registry.register(_PipelineCollector(self))

    def bind(self, pipeline: Pipeline, connections: ConnectionLimit | None = None) -> None:
        """Read the pools, the single-flight and the connections from these at scrape time."""
        self.pipeline = pipeline
        self.connections = connections

    def observe_lookup(self, endpoint: str, hit: bool) -> None:
        """A storage lookup of ``endpoint`` (info, mod, zip): a hit or a miss."""
        (self.cache_hits if hit else self.cache_misses).labels(endpoint).inc()

    def observe_request(
        self, route: str, method: str, status: int, seconds: float, sent: int
    ) -> None:
        self.requests.labels(route, _method_label(method), str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)
        if sent:
            self.response_bytes.labels(route).inc(sent)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _PipelineCollector(Collector):
    """What is read, not counted: pools, single-flight, connections."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._collect())

    def _collect(self) -> Iterator[Metric]:
        pipeline = self._metrics.pipeline
        if pipeline is not None:
            joined = getattr(pipeline.stasher, "joined", None)
            in_flight = getattr(pipeline.stasher, "in_flight", None)
            if isinstance(joined, int):
                yield CounterMetricFamily(
                    "athens_trio_singleflight_joins",
                    "Requests that joined a fetch already in flight instead of starting one.",
                    value=joined,
                )
            if callable(in_flight):
                yield GaugeMetricFamily(
                    "athens_trio_singleflight_in_flight",
                    "Distinct module@version fetches in flight (waited on by any number).",
                    value=in_flight(),
                )
            in_use = GaugeMetricFamily(
                "athens_trio_pool_in_use", "Pool slots in use.", labels=["pool"]
            )
            size = GaugeMetricFamily("athens_trio_pool_size", "Pool slots.", labels=["pool"])
            waiting = GaugeMetricFamily(
                "athens_trio_pool_waiting", "Tasks waiting for a pool slot.", labels=["pool"]
            )
            for name, limiter in (
                ("stash", pipeline.stash_limiter),
                ("protocol", pipeline.protocol_limiter),
            ):
                in_use.add_metric([name], limiter.borrowed_tokens)
                size.add_metric([name], limiter.total_tokens)
                waiting.add_metric([name], limiter.statistics().tasks_waiting)
            yield from (in_use, size, waiting)
        connections = self._metrics.connections
        if connections is not None:
            yield GaugeMetricFamily(
                "athens_trio_connections_open", "Client connections open.", connections.open
            )
            yield GaugeMetricFamily(
                "athens_trio_connections_max",
                "MaxConnections: beyond it, connections wait in the listen queue.",
                connections.limit,
            )


# ---------------------------------------------------------------------------------------
# Fetches: a stash wrapper
# ---------------------------------------------------------------------------------------


def _outcome(error: BaseException) -> str:
    status = status_for(error)
    return {404: "not_found", 504: "timeout", 502: "upstream_error"}.get(status, "error")


class _ObservedStasher(Stasher):
    def __init__(self, inner: Stasher, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def stash(self, module: str, version: str) -> str:
        metrics = self._metrics
        started = time.perf_counter()
        outcome = "cancelled"
        resolved: str | None = None
        problem = ""
        metrics.fetches_in_progress.inc()
        try:
            resolved = await self._inner.stash(module, version)
            outcome = "ok"
            return resolved
        except Exception as exc:
            outcome = _outcome(exc)
            problem = str(exc)
            raise
        finally:
            seconds = time.perf_counter() - started
            metrics.fetches_in_progress.dec()
            metrics.fetches.labels(outcome).inc()
            metrics.fetch_seconds.labels(outcome).observe(seconds)
            fields = {
                "module": module,
                "version": version,
                "resolved": resolved,
                "duration_ms": round(seconds * 1000, 1),
                "outcome": outcome,
            }
            if outcome == "ok":
                fetch_log.info(
                    "fetched %s@%s (%s) in %.2fs",
                    module,
                    version,
                    resolved,
                    seconds,
                    extra={"fields": fields},
                )
            else:
                level = logging.INFO if outcome in ("not_found", "cancelled") else logging.WARNING
                fetch_log.log(
                    level,
                    "fetch of %s@%s: %s after %.2fs%s",
                    module,
                    version,
                    outcome,
                    seconds,
                    f": {problem}" if problem else "",
                    extra={"fields": fields},
                )


def observe_fetches(metrics: Metrics) -> Wrapper:
    """A stash wrapper that counts, times and logs each fetch (put it inside the pool)."""

    def wrap(inner: Stasher) -> Stasher:
        return _ObservedStasher(inner, metrics)

    return wrap
