"""Prometheus metrics (``GET /metrics``).

Each server has its own :class:`Metrics` with its own ``CollectorRegistry`` (never the
process-global one), so several servers in one process count apart.  The envelope
counts the requests; everything else is read at scrape time from the pipeline's parts,
each of which keeps its own typed ``statistics()`` (as trio's primitives do), so the
server pushes nothing down into the pipeline:

- **requests** (the ASGI envelope, :meth:`Metrics.observe_request`):
  ``athens_trio_http_requests_total{route,method,status}``,
  ``athens_trio_http_request_duration_seconds{route}`` (a histogram) and
  ``athens_trio_http_response_bytes_total{route}`` (body bytes sent), where ``route`` is
  an endpoint's name (``list``, ``info``, ``mod``, ``zip``, ``latest``; see
  ``athens_trio/_endpoints.py``) or ``other`` (health, metrics, pages, anything else) and
  ``method`` ``GET``, ``HEAD`` or ``other``.
- **cache hits and misses** (the download protocol's storage lookups of ``.info``,
  ``.mod`` and ``.zip``, :class:`~athens_trio.download.LookupStatistics`):
  ``athens_trio_cache_hits_total{endpoint}`` and
  ``athens_trio_cache_misses_total{endpoint}`` (hits include the fast path's answers,
  ``_fastpath``, whose in-memory cache is ``athens_trio_stored_file_cache_bytes`` and
  ``athens_trio_stored_file_cache_files``).  A hit was served as stored; a miss is a
  call that started a fetch or joined one in flight (or found that the version does not
  exist), and every ``.info`` of a query (a branch, ``latest``), which always asks
  upstream.  ``list`` and ``@latest`` always ask upstream and are not counted.
- **fetches** (the fetch-then-save inside the GoGetWorkers pool,
  :class:`~athens_trio.stash.FetchStatistics`, so each real ``go mod download`` counts
  once, never the requests that joined it): ``athens_trio_fetches_total{outcome}``
  (``ok``, ``not_found``, ``upstream_error``, ``timeout``, ``error``, ``cancelled``;
  failures are every outcome but ``ok``), ``athens_trio_fetch_duration_seconds{outcome}``
  and ``athens_trio_fetches_in_progress``.
- **single-flight**: ``athens_trio_singleflight_joins_total`` (requests spared a fetch
  because one was in flight) and ``athens_trio_singleflight_in_flight``.
- **pools**: ``athens_trio_pool_in_use{pool}``, ``athens_trio_pool_size{pool}`` and
  ``athens_trio_pool_waiting{pool}`` for ``pool`` ``stash`` (GoGetWorkers) and
  ``protocol`` (ProtocolWorkers).
- **overload and shared work**: ``athens_trio_pool_refused_total{pool}`` (503s),
  ``athens_trio_singleflight_abandoned_total``, ``athens_trio_background_fetches`` and
  ``athens_trio_background_fetches_dropped_total``; with a replica lock
  (``SingleFlightType`` redis, redis-sentinel, s3) ``athens_trio_replica_lock_*``
  (held, waiting, reachable, acquired, waited, takeovers, fallbacks); with prefetch on,
  ``athens_trio_prefetch_*`` (queued, prefetched, asked, dropped, failed: asked over
  prefetched is the hit ratio).
- **checksum-database proxy**: ``athens_trio_sumdb_kept_hits_total`` and
  ``athens_trio_sumdb_kept_misses_total`` (tiles and lookups answered from memory, or
  passed on), ``athens_trio_sumdb_kept_answers`` and ``athens_trio_sumdb_kept_bytes``.
- **connections**: ``athens_trio_connections_open``, ``athens_trio_connections_max``;
  plus the process collector's ``process_*``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .._endpoints import endpoint_of_shape
from .._sumdb import SumDBCacheStatistics
from ..stash import FETCH_SECONDS_BOUNDS, FetchStatistics
from ._workers import merged_metrics

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .._pipeline import Pipeline
    from ..download import LookupStatistics
    from ..stash import SingleFlightStatistics
    from ._fastpath import FastPath
    from ._listen import ConnectionLimit

__all__ = [
    "CONTENT_TYPE",
    "Metrics",
    "route_label",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: How prometheus_client spells a bucket's bound (``le="1.0"``); it is untyped.
_bound_label = cast(Callable[[float], str], floatToGoString)

_REQUEST_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip


def route_label(path: str) -> str:
    """The route label of a path (after the PathPrefix): the name of the endpoint it
    looks like it asks, by its shape alone, else ``other``."""
    endpoint = endpoint_of_shape(path)
    return "other" if endpoint is None else endpoint.name


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
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._route_children: dict[str, tuple[Histogram, Counter]] = {}
        ProcessCollector(registry=registry)
        self.pipeline: Pipeline | None = None
        self.connections: ConnectionLimit | None = None
        self.fast_path: FastPath | None = None
        #: The other workers' snapshots, when this process is one of several.
        self.peers: Path | None = None
        registry.register(_PipelineCollector(self))

    def bind(self, pipeline: Pipeline, connections: ConnectionLimit | None = None) -> None:
        """Read the pipeline's parts and the connections from these at scrape time."""
        self.pipeline = pipeline
        self.connections = connections

    def bind_fast_path(self, fast_path: FastPath) -> None:
        """Count the fast path's answers with the protocol's storage hits, and show its
        cache."""
        self.fast_path = fast_path

    def observe_request(
        self, route: str, method: str, status: int, seconds: float, sent: int
    ) -> None:
        # The labelled children are kept: labels() takes a lock and builds a key each
        # time, a visible share of a cached hit's cost.
        key = (route, method, status)
        count = self._request_children.get(key)
        if count is None:
            count = self.requests.labels(route, _method_label(method), str(status))
            self._request_children[key] = count
        count.inc()
        children = self._route_children.get(route)
        if children is None:
            children = (self.request_seconds.labels(route), self.response_bytes.labels(route))
            self._route_children[route] = children
        children[0].observe(seconds)
        if sent:
            children[1].inc(sent)

    def render_own(self) -> bytes:
        """The Prometheus text exposition of this process's metrics."""
        return generate_latest(self.registry)

    async def render(self) -> bytes:
        """What ``/metrics`` shows: this process's metrics, summed with the other
        workers' when it is one of several (``_workers``)."""
        own = self.render_own()
        if self.peers is None:
            return own
        return await trio.to_thread.run_sync(merged_metrics, own, self.peers)


class _PipelineCollector(Collector):
    """What is read, not counted here: the pipeline parts' statistics(), connections."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._collect())

    def _collect(self) -> Iterator[Metric]:
        pipeline = self._metrics.pipeline
        fast_path = self._metrics.fast_path
        fast_hits: Mapping[str, int] = {}
        if fast_path is not None:
            fast = fast_path.statistics()
            fast_hits = fast.hits
            yield GaugeMetricFamily(
                "athens_trio_stored_file_cache_bytes",
                "Bytes of stored .info and .mod files held in memory.",
                fast.cached_bytes,
            )
            yield GaugeMetricFamily(
                "athens_trio_stored_file_cache_files",
                "Stored .info and .mod files held in memory.",
                fast.cached_files,
            )
        if pipeline is not None:
            yield from _pipeline_metrics(pipeline, fast_hits)
            if pipeline.sumdb is not None:
                yield from _sumdb_metrics(pipeline.sumdb.statistics())
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


def _sumdb_metrics(kept: SumDBCacheStatistics) -> Iterator[Metric]:
    """The checksum-database proxy's kept tiles and lookups."""
    yield GaugeMetricFamily(
        "athens_trio_sumdb_kept_bytes", "Bytes of checksum-database answers kept.", kept.bytes
    )
    yield GaugeMetricFamily(
        "athens_trio_sumdb_kept_answers", "Checksum-database answers kept.", kept.entries
    )
    yield CounterMetricFamily(
        "athens_trio_sumdb_kept_hits",
        "Tile and lookup requests answered from what was kept.",
        value=kept.hits,
    )
    yield CounterMetricFamily(
        "athens_trio_sumdb_kept_misses",
        "Tile and lookup requests passed on to the checksum database.",
        value=kept.misses,
    )


def _by_endpoint(name: str, documentation: str, counts: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=["endpoint"])
    for endpoint, count in counts.items():
        family.add_metric([endpoint], count)
    return family


def _fetch_metrics(fetches: FetchStatistics) -> Iterator[Metric]:
    count = CounterMetricFamily(
        "athens_trio_fetches",
        "Fetches (go mod download, then save) finished, by outcome.",
        labels=["outcome"],
    )
    seconds = HistogramMetricFamily(
        "athens_trio_fetch_duration_seconds",
        "How long a fetch took once it had a GoGetWorkers slot, by outcome.",
        labels=["outcome"],
    )
    for outcome, tally in fetches.outcomes.items():
        count.add_metric([outcome], tally.count)
        buckets = [
            (_bound_label(bound), cumulative)
            for bound, cumulative in zip(FETCH_SECONDS_BOUNDS, tally.buckets, strict=True)
        ]
        seconds.add_metric([outcome], [*buckets, ("+Inf", tally.count)], tally.seconds)
    yield count
    yield seconds
    yield GaugeMetricFamily(
        "athens_trio_fetches_in_progress", "Fetches running now.", fetches.in_progress
    )


def _pipeline_metrics(pipeline: Pipeline, fast_hits: Mapping[str, int]) -> Iterator[Metric]:
    lookups = pipeline.lookups.statistics()
    # A hit answered by the fast path is a hit all the same.
    hits = {e: lookups.hits.get(e, 0) + fast_hits.get(e, 0) for e in {*lookups.hits, *fast_hits}}
    yield _by_endpoint(
        "athens_trio_cache_hits",
        "info/mod/zip calls for a version storage already held.",
        hits,
    )
    yield _by_endpoint(
        "athens_trio_cache_misses",
        "info/mod/zip calls for a version storage did not hold (or a query): each "
        "started a fetch or joined one.",
        lookups.misses,
    )
    yield from _fetch_metrics(pipeline.fetches.statistics())
    singleflight = pipeline.singleflight.statistics()
    yield CounterMetricFamily(
        "athens_trio_singleflight_joins",
        "Requests that joined a fetch already in flight instead of starting one.",
        value=singleflight.joined,
    )
    yield GaugeMetricFamily(
        "athens_trio_singleflight_in_flight",
        "Distinct module@version fetches in flight (waited on by any number).",
        value=singleflight.in_flight,
    )
    in_use = GaugeMetricFamily("athens_trio_pool_in_use", "Pool slots in use.", labels=["pool"])
    size = GaugeMetricFamily("athens_trio_pool_size", "Pool slots.", labels=["pool"])
    waiting = GaugeMetricFamily(
        "athens_trio_pool_waiting", "Tasks waiting for a pool slot.", labels=["pool"]
    )
    refused = CounterMetricFamily(
        "athens_trio_pool_refused",
        "Calls answered 503 because the pool's slots and queue were full.",
        labels=["pool"],
    )
    for name, pool in (
        ("stash", pipeline.stash_pool.statistics()),
        ("protocol", pipeline.protocol_pool.statistics()),
    ):
        in_use.add_metric([name], pool.in_use)
        size.add_metric([name], pool.size)
        waiting.add_metric([name], pool.waiting)
        refused.add_metric([name], pool.refused)
    yield from (in_use, size, waiting, refused)
    yield from _overload_metrics(pipeline, lookups, singleflight)


def _overload_metrics(
    pipeline: Pipeline, lookups: LookupStatistics, singleflight: SingleFlightStatistics
) -> Iterator[Metric]:
    """Work given up or not started, the async modes' background fetches, the lock
    shared by replicas and the prefetcher: each read from its own statistics()."""
    yield CounterMetricFamily(
        "athens_trio_singleflight_abandoned",
        "Fetches cancelled because no client waited for them any more (AbandonedFetchGrace).",
        value=singleflight.abandoned,
    )
    yield GaugeMetricFamily(
        "athens_trio_background_fetches",
        "Background fetches (DownloadMode async, async_redirect) queued or running.",
        value=lookups.background,
    )
    yield CounterMetricFamily(
        "athens_trio_background_fetches_dropped",
        "Background fetches not started because BackgroundFetchQueue were pending.",
        value=lookups.background_dropped,
    )
    if pipeline.distributed_lock is not None:
        lock = pipeline.distributed_lock.statistics()
        for name, kind, value, documentation in (
            ("held", GaugeMetricFamily, lock.held, "Replica locks this process holds."),
            ("waiting", GaugeMetricFamily, lock.waiting, "Stashes waiting for another replica."),
            (
                "reachable",
                GaugeMetricFamily,
                int(lock.reachable),
                "1 if the lock's server answers.",
            ),
            ("acquired", CounterMetricFamily, lock.acquired, "Replica locks taken."),
            ("waited", CounterMetricFamily, lock.waited, "Waits for another replica's lock."),
            ("takeovers", CounterMetricFamily, lock.takeovers, "Locks taken from dead holders."),
            ("fallbacks", CounterMetricFamily, lock.fallbacks, "Stashes run without the lock."),
        ):
            yield kind(f"athens_trio_replica_lock_{name}", documentation, value=value)
    if pipeline.prefetcher is not None:
        prefetch = pipeline.prefetcher.statistics()
        yield GaugeMetricFamily(
            "athens_trio_prefetch_queued", "go.mod parts waiting to be prefetched.", prefetch.queued
        )
        for name, value, documentation in (
            ("prefetched", prefetch.prefetched, "go.mod parts prefetched (storage lacked them)."),
            ("asked", prefetch.asked, "Prefetched go.mod parts a client asked for afterwards."),
            ("dropped", prefetch.dropped, "Prefetches not queued: the queue was full."),
            ("failed", prefetch.failed, "Prefetches refused, not found or failed."),
        ):
            yield CounterMetricFamily(f"athens_trio_prefetch_{name}", documentation, value=value)
