"""The five GOPROXY endpoints, in one table: their paths, names, caching and content.

::

    name    path                               content              Cache-Control
    list    /<module>/@v/list                  text, one per line   short
    latest  /<module>/@latest                  .info JSON           short
    info    /<module>/@v/<version>.info        JSON                 immutable (a query's: short)
    mod     /<module>/@v/<version>.mod         go.mod text          immutable
    zip     /<module>/@v/<version>.zip         zip                  immutable

``<module>`` and ``<version>`` are case-escaped (``!a`` for ``A``).  The download
protocol builds redirect locations from this table (:meth:`Endpoint.path`); the server
parses request paths (``server/_routing.py``), labels its metrics and sets
``Cache-Control`` and ``Content-Type`` from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._module import escape_path, escape_version, is_canonical_version

__all__ = [
    "CACHE_IMMUTABLE",
    "CACHE_NONE",
    "CACHE_SHORT",
    "ENDPOINTS",
    "INFO",
    "JSON",
    "LATEST",
    "LIST",
    "MOD",
    "TEXT",
    "VERSIONS",
    "ZIP",
    "Endpoint",
    "endpoint_of_shape",
]

#: A stored version never changes, so any cache may keep it for a year without asking.
CACHE_IMMUTABLE = "public, max-age=31536000, immutable"
#: What moves when upstream tags or pushes (list, latest, the ``.info`` of a branch):
#: a cache may keep it for a minute only.
CACHE_SHORT = "public, max-age=60"
#: Errors and the health endpoints: a fault or a 404 must not outlive its cause.
CACHE_NONE = "no-store"

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"

#: What separates the module path from the version part: a module path has no ``@``.
VERSIONS = "/@v/"


@dataclass(frozen=True)
class Endpoint:
    """One GOPROXY endpoint."""

    #: ``list``, ``latest``, ``info``, ``mod`` or ``zip``: also its route label in the
    #: metrics and the access log.
    name: str
    #: How its path ends: ``/@v/list``, ``/@latest``, or ``.info`` after the version.
    suffix: str
    #: Whether its path names a version: ``/<module>/@v/<version><suffix>``.
    versioned: bool
    #: Whether that version must be canonical (``.mod`` and ``.zip`` name one
    #: immutable file; only ``.info`` resolves queries such as a branch).
    canonical_only: bool
    content_type: str
    #: ``Cache-Control`` of a successful answer (:meth:`cache_control`).
    cache: str

    def path(self, module: str, version: str | None = None) -> str:
        """The (escaped) path that asks this endpoint for ``module`` at ``version``."""
        if not self.versioned:
            return f"/{escape_path(module)}{self.suffix}"
        assert version is not None, f"{self.name} needs a version"
        return f"/{escape_path(module)}{VERSIONS}{escape_version(version)}{self.suffix}"

    def cache_control(self, version: str | None) -> str:
        """``Cache-Control`` of a successful answer for ``version``: what a query
        resolves to moves, what a canonical version names never does."""
        if version is not None and not is_canonical_version(version):
            return CACHE_SHORT
        return self.cache

    def has_shape(self, path: str) -> bool:
        """Whether ``path`` looks like a request of this endpoint (its ending alone,
        unchecked: for labelling, never for answering)."""
        return path.endswith(self.suffix) and (not self.versioned or VERSIONS in path)


LIST = Endpoint("list", VERSIONS + "list", False, False, TEXT, CACHE_SHORT)
LATEST = Endpoint("latest", "/@latest", False, False, JSON, CACHE_SHORT)
INFO = Endpoint("info", ".info", True, False, JSON, CACHE_IMMUTABLE)
MOD = Endpoint("mod", ".mod", True, True, TEXT, CACHE_IMMUTABLE)
ZIP = Endpoint("zip", ".zip", True, True, "application/zip", CACHE_IMMUTABLE)

#: Every endpoint, in the order a path's shape is matched against them.
ENDPOINTS = (LIST, LATEST, INFO, MOD, ZIP)


def endpoint_of_shape(path: str) -> Endpoint | None:
    """The endpoint a path (after the PathPrefix) looks like it asks, by its ending alone;
    None for any other path (health, metrics, pages)."""
    for endpoint in ENDPOINTS:
        if endpoint.has_shape(path):
            return endpoint
    return None
