"""Where a checksum database is reached: through the GOPROXY list first, as go does
(``upstream/_sumdb_access.py``; end to end in test_upstream_proxy.py)."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from athens_trio.sumdb import SumDBAccess, SumDBUnreachableError, parse_gosumdb
from athens_trio.upstream import GoproxyClient, ProxyPlan, parse_goproxy, sumdb_locator

from .staticproxy import static_proxy

NAME = "sum.example.test"


def _serving(root: Path) -> Path:
    """A proxy tree that says it serves database NAME."""
    supported = root / "sumdb" / NAME / "supported"
    supported.parent.mkdir(parents=True)
    supported.write_text("")
    return root


async def _locate(plan: ProxyPlan, http: httpx.AsyncClient) -> SumDBAccess | None:
    return await sumdb_locator(GoproxyClient(plan, http))(NAME)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_the_first_proxy_that_serves_the_database_is_used(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    async with (
        static_proxy(tmp_path / "a") as silent,
        static_proxy(_serving(tmp_path / "b")) as serving,
        httpx.AsyncClient() as http,
    ):
        plan = parse_goproxy(f"{silent.url},http://u:p@{serving.url[7:]},direct")
        access = await _locate(plan, http)
        assert access is not None
        assert access.url == f"{serving.url}/sumdb/{NAME}"
        assert isinstance(access.auth, httpx.BasicAuth)  # the proxy's userinfo
        assert serving.seen[-1].headers["authorization"] == _basic("u", "p")
        assert any(s.path == f"/sumdb/{NAME}/supported" for s in silent.seen)
        # Not found everywhere, or direct reached: the database itself.
        assert await _locate(parse_goproxy(f"{silent.url},direct"), http) is None
        assert await _locate(parse_goproxy(f"{silent.url}"), http) is None
        assert await _locate(parse_goproxy(f"direct,{serving.url}"), http) is None


async def test_a_fault_makes_the_database_unreachable_unless_the_list_falls_back(
    tmp_path: Path,
) -> None:
    async with (
        static_proxy(_serving(tmp_path / "a")) as broken,
        static_proxy(_serving(tmp_path / "b")) as serving,
        httpx.AsyncClient() as http,
    ):
        broken.faults["/supported"] = 503
        with pytest.raises(SumDBUnreachableError, match="503"):
            await _locate(parse_goproxy(f"{broken.url},{serving.url}"), http)
        plan = parse_goproxy(f"{broken.url}|{serving.url}")
        access = await _locate(plan, http)
        assert access is not None
        assert access.url == f"{serving.url}/sumdb/{NAME}"
        # "direct" after a fault: the database itself (go ranks direct's answer first);
        # "off" or the end of the list after one: the fault is the answer.
        assert await _locate(parse_goproxy(f"{broken.url}|direct"), http) is None
        with pytest.raises(SumDBUnreachableError):
            await _locate(parse_goproxy(f"{broken.url}|off"), http)
        with pytest.raises(SumDBUnreachableError):
            await _locate(parse_goproxy(f"{broken.url}|{tmp_path.as_uri()}"), http)


def test_a_url_in_gosumdb_asks_no_proxy() -> None:
    given = parse_gosumdb("sum.golang.org https://mirror.example/db")
    assert given is not None
    assert given.url_given
    default = parse_gosumdb("sum.golang.org")
    assert default is not None
    assert not default.url_given
