"""The admin API: background warms (``POST /admin/warm``, ``GET /admin/warm/<id>``) and
takedowns (``DELETE /admin/modules/<module>`` for every stored version,
``DELETE /admin/modules/<module>/@v/<version>`` for one; case-escaped as the protocol's
paths; each version's ``.info`` goes first, so none is ever seen half there).  The
web catalog (``_ui``) is registered here too: the app gains every operator route by one
call (:func:`register`).

All of it is behind basic auth: the envelope checks the credentials of every request
when ``BasicAuthUser``/``BasicAuthPass`` are set, and when they are not these routes
answer 403 ("the admin API needs BasicAuthUser and BasicAuthPass"): nothing that fetches
in bulk, deletes or shows what is stored is ever open to anyone who can reach the port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from .._endpoints import CACHE_NONE, JSON, VERSIONS
from .._exceptions import AthensTrioError, ForbiddenError, InvalidRequestError, NotFoundError
from .._module import check_canonical_version, check_path, unescape_path, unescape_version
from .._pipeline import Pipeline
from .._semver import sort_versions
from ..ops import DEFAULT_WARM_CONCURRENCY, Warm, parse_go_mod, parse_go_sum, parse_module_version
from ..storage import mark_takedown

__all__ = ["ADMIN_OFF", "WarmJobs", "register"]

log = logging.getLogger("athens_trio.server")

ADMIN_OFF = "the admin API and /ui need BasicAuthUser and BasicAuthPass set"
#: Warm jobs remembered for GET /admin/warm/<id>; beyond it the oldest finished go.
MAX_WARM_JOBS = 100
MAX_WARM_CONCURRENCY = 32
#: Seconds between two writes of a running warm's status for the other workers.
WARM_STATUS_EVERY = 1.0
#: A warm's status file older than this is removed when a new warm starts.
WARM_STATUS_KEPT = 24 * 3600.0
_JOB_ID = re.compile(r"[0-9a-f]{16}")


class WarmStatusFiles:
    """Warm statuses where every worker of this machine reads them (a GET may reach
    another worker than the POST did): ``<id>.json`` in ``directory``, each written
    whole (a temporary file renamed into place)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, job_id: str, status: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / f".{job_id}.{secrets.token_hex(4)}.tmp"
        temporary.write_bytes(msgspec.json.encode(status))
        os.replace(temporary, self.directory / f"{job_id}.json")

    def read(self, job_id: str) -> Any:
        """The status written for ``job_id``, or None (never a path from the request:
        ``job_id`` is checked to be one of ours in form first)."""
        if not _JOB_ID.fullmatch(job_id):
            return None
        try:
            return msgspec.json.decode((self.directory / f"{job_id}.json").read_bytes())
        except (OSError, msgspec.DecodeError):
            return None

    def prune(self, now: float) -> None:
        with contextlib.suppress(OSError):
            for path in self.directory.glob("*.json"):
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > WARM_STATUS_KEPT:
                        path.unlink()


class WarmJobs:
    """The background warms, by id, newest last."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, Warm] = OrderedDict()

    def add(self, warm: Warm) -> str:
        job_id = secrets.token_hex(8)
        self._jobs[job_id] = warm
        for old_id, old in list(self._jobs.items()):
            if len(self._jobs) <= MAX_WARM_JOBS:
                break
            if old.statistics().finished:
                del self._jobs[old_id]
        return job_id

    def get(self, job_id: str) -> Warm | None:
        return self._jobs.get(job_id)

    def in_flight(self) -> int:
        return sum(not warm.statistics().finished for warm in self._jobs.values())


def _json(value: Any, status: int = 200) -> Response:
    return Response(
        msgspec.json.encode(value),
        status=status,
        content_type=JSON,
        headers={"Cache-Control": CACHE_NONE},
    )


def _warm_request(body: Any) -> dict[str, Any]:
    """The arguments of :meth:`Warm.run` from the JSON body (InvalidRequestError)."""
    if not isinstance(body, dict):
        raise InvalidRequestError('expected a JSON object: {"modules": [...], "go_mod": ...}')
    try:
        modules = [parse_module_version(str(m)) for m in body.get("modules", [])]
        go_sum = body.get("go_sum")
        go_mod = body.get("go_mod")
        go_sums = [parse_go_sum(str(go_sum))] if go_sum else []
        go_mods = [str(go_mod)] if go_mod else []
        for text in go_mods:
            parse_go_mod(text)
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(str(exc)) from None
    if not (modules or go_sums or go_mods):
        raise InvalidRequestError('nothing to warm: give "modules", "go_mod" or "go_sum"')
    return {"modules": modules, "go_sums": go_sums, "go_mods": go_mods}


#: Where a deletion's path starts: ``/admin/modules/<module>[/@v/<version>]``.
DELETE_PREFIX = "/admin/modules/"


async def _deletion(pipeline: Pipeline, path: str) -> tuple[str, list[str]]:
    """The module and the versions a DELETE path names (all stored ones for a module)."""
    target = path.removeprefix(DELETE_PREFIX)
    escaped_module, marker, escaped_version = target.partition(VERSIONS)
    module = unescape_path(escaped_module)
    check_path(module)
    if marker:
        version = unescape_version(escaped_version)
        check_canonical_version(version)
        return module, [version]
    return module, sort_versions(await pipeline.storage.list_versions(module))


def register(
    app: QuartTrio,
    pipeline: Pipeline,
    *,
    auth: bool,
    forget_stored: Callable[[], None] | None = None,
) -> None:
    """Add the admin routes and /ui to ``app``; ``auth``: basic auth is configured;
    ``forget_stored``: what drops the fast path's memory of stored files."""
    from . import _ui  # the catalog pages: behind the same guard

    jobs = WarmJobs()
    statuses = WarmStatusFiles(pipeline.machine_root / ".locks" / "warm")

    def guard() -> None:
        if not auth:
            raise ForbiddenError(ADMIN_OFF)

    @app.post("/admin/warm")
    async def start_warm() -> Response:
        guard()
        try:
            body = msgspec.json.decode(await request.get_data())
        except msgspec.DecodeError as exc:
            raise InvalidRequestError(f"the body is not JSON: {exc}") from None
        arguments = _warm_request(body)
        concurrency = body.get("concurrency", DEFAULT_WARM_CONCURRENCY)
        if not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_WARM_CONCURRENCY:
            raise InvalidRequestError(f"concurrency: 1 to {MAX_WARM_CONCURRENCY}")
        warm = Warm(pipeline.protocol, pipeline.storage, concurrency=concurrency)
        job_id = jobs.add(warm)

        def status() -> dict[str, Any]:
            return {"id": job_id, **asdict(warm.statistics())}

        async def write_status() -> None:
            try:
                await trio.to_thread.run_sync(statuses.write, job_id, status())
            except OSError as exc:  # the warm goes on; only other workers miss its status
                log.warning("cannot write warm %s's status: %s", job_id, exc)

        async def publish() -> None:
            try:
                while True:
                    await write_status()
                    await trio.sleep(WARM_STATUS_EVERY)
            finally:
                with trio.CancelScope(shield=True):  # the last word: finished (or not)
                    await write_status()

        async def run_and_publish() -> Any:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish)
                try:
                    return await warm.run(**arguments)
                finally:
                    nursery.cancel_scope.cancel()

        async def run() -> None:
            try:
                stats = await run_and_publish()
            except AthensTrioError as exc:  # nobody waits for it: the log and the status
                log.warning("warm %s failed: %s", job_id, exc)
                return
            except Exception:
                # A bug in a background job must not take the server (and, through the
                # supervisor, every worker) down with it: logged whole, the job ends.
                log.exception("warm %s failed", job_id)
                return
            log.info(
                "warm %s: %d fetched, %d already stored, %d failed",
                job_id,
                stats.fetched,
                stats.already_stored,
                stats.failed,
            )

        assert pipeline.nursery is not None, "the pipeline's nursery runs the warms"
        await trio.to_thread.run_sync(statuses.prune, time.time())
        pipeline.nursery.start_soon(run, name=f"warm {job_id}")
        return _json({"id": job_id, "status": f"admin/warm/{job_id}"}, 202)

    @app.delete("/admin/modules/<anypath:_target>")
    async def delete(_target: str) -> Response:
        guard()
        module, versions = await _deletion(pipeline, request.scope["path"])
        deleted: list[str] = []
        for version in versions:
            try:
                await pipeline.storage.delete(module, version)  # its .info first
            except NotFoundError:
                continue  # removed meanwhile
            deleted.append(version)
        if pipeline.activity is not None:
            await pipeline.activity.last_served.forget(module, deleted)
        if deleted:
            # Nothing kept in memory serves them any more: this worker's fast path now,
            # the other workers' within a second (the marker).
            if forget_stored is not None:
                forget_stored()
            if pipeline.storage_root is not None:
                await trio.to_thread.run_sync(mark_takedown, pipeline.storage_root)
        if not deleted:
            raise NotFoundError(f"{module}: nothing of it is stored")
        log.info("deleted %s@%s by the admin API", module, ",".join(deleted))
        return _json({"module": module, "deleted": deleted})

    _ui.register(app, pipeline, guard=guard, warms_in_flight=jobs.in_flight)

    @app.get("/admin/warm/<job_id>")
    async def warm_status(job_id: str) -> Response:
        guard()
        warm = jobs.get(job_id)
        if warm is None:
            # Started by another worker of this machine?
            written = await trio.to_thread.run_sync(statuses.read, job_id)
            if written is not None:
                return _json(written)
            raise NotFoundError(f"no warm {job_id!r} (finished ones are forgotten in time)")
        return _json({"id": job_id, **asdict(warm.statistics())})
