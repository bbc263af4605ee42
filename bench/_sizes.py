"""How big each scenario is: the full run, and ``--quick``'s toy sizes."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FULL", "KIB", "MIB", "QUICK", "Sizes"]

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class Sizes:
    # cached: pre-filled storage served under load.
    cached_versions: int
    """Small versions whose .info and .mod make the request mix."""
    cached_zip_sizes: tuple[int, ...]
    cached_concurrency: tuple[int, ...]
    load_requests: int
    """Upper bound on requests of one load run (both bounds hold: count and time)."""
    load_seconds: float
    """Upper bound on one load run's duration."""
    go_client_versions: int
    """Versions ``go mod download`` takes from pre-filled storage (the go-client row)."""

    # cold: versions fetched from local git, bare go vs through athens-trio.
    cold_versions: int
    cold_repeats: int

    # herd: clients asking for one cold version at once.
    herd_clients: tuple[int, ...]

    # memory: clients pulling one big zip at once.
    memory_clients: int
    memory_zip_size: int

    # graph: a consumer module's dependencies.
    graph_dependencies: int

    # upstream, prefetch row: a tree of go 1.16 modules, each requiring this many.
    prefetch_fanout: int = 10

    # replicas: athens-trio replicas sharing an S3 bucket and a Redis.
    replicas_versions: int = 100
    """Small versions whose .info and .mod make the cached request mix."""
    replicas_concurrency: tuple[int, ...] = (8, 32, 128)
    """Clients of the cached load, split over two load generators."""
    replicas_herd_clients: int = 50
    """Clients of a cold herd, split over the replicas."""
    replicas_herd_versions: int = 3
    """Cold versions each configuration's herd is run on (one herd each)."""

    # Limits of the athens-trio under test.
    goget_workers: int = 10
    protocol_workers: int = 30
    stash_timeout: int = 300


QUICK = Sizes(
    cached_versions=5,
    cached_zip_sizes=(10 * KIB, 1 * MIB),
    cached_concurrency=(1, 8),
    load_requests=200,
    load_seconds=0.5,
    go_client_versions=3,
    cold_versions=3,
    cold_repeats=1,
    herd_clients=(10,),
    memory_clients=4,
    memory_zip_size=8 * MIB,
    graph_dependencies=5,
    prefetch_fanout=2,
    replicas_versions=5,
    replicas_concurrency=(4,),
    replicas_herd_clients=6,
    replicas_herd_versions=1,
)

FULL = Sizes(
    cached_versions=100,
    cached_zip_sizes=(10 * KIB, 1 * MIB, 50 * MIB),
    cached_concurrency=(1, 8, 32, 128),
    load_requests=50_000,
    load_seconds=5.0,
    go_client_versions=50,
    cold_versions=20,
    cold_repeats=3,
    herd_clients=(10, 100, 500),
    memory_clients=20,
    memory_zip_size=200 * MIB,
    graph_dependencies=110,
)
