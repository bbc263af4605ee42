"""``go list -m -json module@query``: one module version's name, time and go.mod.

``go list -m`` resolves a query and fetches the version's go.mod (go keeps it in its
cache and prints the file's path) but never the zip, and never refuses a module whose
go.mod asks for a newer go than ours: only building or extracting the zip does that.
So it is what both resolving a query and fetching a go.mod are made of.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec
import trio

from .._exceptions import UpstreamError
from .._module import check_path, check_version_query, is_canonical_version
from ._gocmd import GoRunner, classify_go_error, scrub_paths

__all__ = ["ListedModule", "go_list_module"]


class _GoListJSON(msgspec.Struct):
    """The fields of ``go list -m -json`` output that we use."""

    Path: str = ""
    Version: str = ""
    Versions: list[str] = msgspec.field(default_factory=list)
    Time: datetime | None = None
    GoMod: str = ""
    Retracted: list[str] = msgspec.field(default_factory=list)
    Error: dict[str, str] | None = None


_decoder = msgspec.json.Decoder(_GoListJSON)


@dataclass(frozen=True)
class ListedModule:
    """What go listed for ``module@query``."""

    version: str  # canonical
    time: datetime
    versions: list[str]  # only with the -versions flag
    retracted: bool  # only known with the -retracted flag
    mod: bytes | None  # the go.mod, if asked for


async def go_list_module(
    runner: GoRunner,
    module: str,
    query: str,
    *,
    flags: Sequence[str] = (),
    timeout: float,  # noqa: ASYNC109
    read_mod: bool = False,
) -> ListedModule:
    """Run ``go list -m <flags> -json module@query``; read the go.mod if ``read_mod``.

    Raises NotFoundError / UpstreamError as :func:`classify_go_error` decides, and
    UpstreamError if go answered for another module or a non-canonical version.
    """
    # The gate again, whoever the caller: nothing unchecked reaches go's argv.
    check_path(module)
    check_version_query(query)
    what = f"listing {module}@{query}"
    args = ["list", "-m", *flags, "-json", f"{module}@{query}"]
    async with runner.run(args, timeout=timeout, what=what) as result:
        stderr = result.stderr.decode(errors="replace").strip()
        if result.returncode != 0:
            # Without -e, go list reports failures on stderr only.
            raise classify_go_error(
                stderr or f"{what}: go exited {result.returncode}",
                module=module,
                query=query,
                private_paths=result.private_paths,
            )
        try:
            listed = _decoder.decode(result.stdout)
        except msgspec.DecodeError:
            tail = scrub_paths(stderr[-2000:], result.private_paths)
            raise UpstreamError(f"{what}: go printed no JSON: {tail}") from None
        if listed.Error:
            raise classify_go_error(
                listed.Error.get("Err", stderr),
                module=module,
                query=query,
                private_paths=result.private_paths,
            )
        if listed.Path != module or not is_canonical_version(listed.Version) or not listed.Time:
            raise UpstreamError(f"{what}: go answered {listed.Path}@{listed.Version}")
        mod = None
        if read_mod:
            if not listed.GoMod:
                raise UpstreamError(f"{what}: go named no go.mod file")
            # Read inside the block: the file lives in the run's temporary GOPATH.
            mod = await trio.Path(listed.GoMod).read_bytes()
    return ListedModule(
        version=listed.Version,
        time=listed.Time,
        versions=listed.Versions,
        retracted=bool(listed.Retracted),
        mod=mod,
    )
