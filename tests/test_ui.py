"""``/ui``, the operators' web catalog, in a real headless Chromium (Debian's
/usr/bin/chromium driven by Playwright): behind basic auth, searchable, versions with
size, stored-at and last-served, hit ratio, fetches in flight, recent failures, the
lines to copy; no request leaves the server's origin; the layout checked on element
boxes of a screenshot-sized viewport (not pixels)."""

from __future__ import annotations

import itertools
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from athens_trio import Config, DiskStorage, NotFoundError, UpstreamError

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import served, store_version

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
USER, PASSWORD = "ops", "s3cret"
VIEWPORT = {"width": 1280, "height": 900}
MODULES = ("example.com/alpha", "example.com/beta", "corp.example/Gamma")


@contextmanager
def _browser() -> Iterator[Any]:
    """Chromium under Playwright; the test FAILS (never skips) when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install playwright (the test extra has it)")
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _config(tmp_path: Path, go_binary: str, fixtures: GoFixtures, **extra: object) -> Config:
    # DownloadMode none: a miss is a 404 at once, and nothing reaches for the network.
    return make_config(tmp_path, go_binary, fixtures, download_mode="none", **extra)


async def test_ui_needs_basic_auth_and_escapes_what_it_shows(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    async with (
        served(_config(tmp_path / "open", go_binary, go_fixtures)) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        refused = await http.get("/ui")
        assert refused.status_code == 403
        assert "BasicAuthUser" in refused.text
    config = _config(
        tmp_path, go_binary, go_fixtures, basic_auth_user=USER, basic_auth_pass=PASSWORD
    )
    async with served(config) as server:
        async with httpx.AsyncClient(base_url=server.url) as anonymous:
            assert (await anonymous.get("/ui")).status_code == 401
        async with httpx.AsyncClient(base_url=server.url, auth=(USER, PASSWORD)) as http:
            page = await http.get("/ui", params={"q": "<script>alert(1)</script>"})
            assert page.status_code == 200
            assert "default-src 'none'" in page.headers["Content-Security-Policy"]
            assert "<script>alert(1)" not in page.text
            assert "&lt;script&gt;alert(1)" in page.text
            assert PASSWORD not in page.text
            assert (await http.get("/ui/module/example.com/A")).status_code == 400


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def _browse(url: str, shots: Path) -> dict[str, Any]:
    """Walk the catalog as an operator would; return what the checks need."""
    seen: dict[str, Any] = {"requests": []}
    origin = url.rstrip("/")
    with _browser() as browser:
        context = browser.new_context(
            viewport=VIEWPORT, http_credentials={"username": USER, "password": PASSWORD}
        )
        page = context.new_page()
        page.on("request", lambda r: seen["requests"].append(r.url))
        page.goto(f"{origin}/ui")
        seen["title"] = page.title()
        seen["cards"] = {
            key: page.locator(f"#card-{key}").inner_text()
            for key in ("hit-ratio", "fetching", "warming", "modules")
        }
        seen["card_boxes"] = [page.locator(".card").nth(i).bounding_box() for i in range(4)]
        seen["header_box"] = page.locator("header").bounding_box()
        seen["search_box"] = page.locator("input[type=search]").bounding_box()
        seen["modules_box"] = page.locator("#modules").bounding_box()
        seen["failures_box"] = page.locator("#failures").bounding_box()
        seen["scroll_width"] = page.evaluate("document.documentElement.scrollWidth")
        seen["modules"] = page.locator("#modules tbody tr td:first-child").all_inner_texts()
        seen["failures"] = page.locator("#failures tbody tr").all_inner_texts()
        seen["goproxy"] = page.locator("#goproxy-line").inner_text()
        seen["netrc"] = page.locator("#netrc-line").inner_text()
        seen["screenshot"] = page.screenshot(path=str(shots / "ui.png"))

        page.fill("input[type=search]", "alpha")
        page.click("button[type=submit]")
        page.wait_for_url("**/ui?q=alpha")
        seen["searched"] = page.locator("#modules tbody tr td:first-child").all_inner_texts()
        page.click("text=example.com/alpha")
        page.wait_for_selector("#versions")
        seen["versions"] = [
            row.split("\t") for row in page.locator("#versions tbody tr").all_inner_texts()
        ]
        page.screenshot(path=str(shots / "module.png"))
        page.goto(f"{origin}/ui?q=nothing-matches")
        seen["no_match"] = page.locator("#modules tbody").inner_text()
        context.close()
    return seen


async def test_the_catalog_in_chromium(
    tmp_path: Path, go_binary: str, go_fixtures: GoFixtures
) -> None:
    config = _config(
        tmp_path, go_binary, go_fixtures, basic_auth_user=USER, basic_auth_pass=PASSWORD
    )
    storage = DiskStorage(config.disk_root)
    await storage.ready()
    for module in MODULES:
        await store_version(storage, tmp_path, module, "v1.0.0", 3000)
    await store_version(storage, tmp_path, MODULES[0], "v1.1.0", 200_000)
    async with served(config) as server:
        protocol = server.pipeline.protocol
        await protocol.go_mod(MODULES[0], "v1.1.0")  # a hit, and served
        with pytest.raises(NotFoundError):
            await protocol.go_mod(MODULES[0], "v1.9.0")  # a miss
        assert server.pipeline.activity is not None
        server.pipeline.activity.failed(
            MODULES[1], "v2.0.0", UpstreamError("go: github.com: 503 Service Unavailable")
        )
        seen = await trio.to_thread.run_sync(_browse, server.url, tmp_path)

    origin = server.url.rstrip("/")
    assert all(url.startswith(origin + "/ui") for url in seen["requests"]), seen["requests"]
    assert seen["title"] == "Catalog"
    assert seen["cards"]["hit-ratio"].splitlines()[0] == "50.0%", seen["cards"]
    assert seen["cards"]["fetching"].startswith("0")
    assert seen["cards"]["modules"].startswith("3\nmodules, 4 versions")
    assert seen["modules"] == sorted(MODULES)
    assert seen["failures"] == [
        f"{seen['failures'][0].split(chr(9))[0]}\t{MODULES[1]}@v2.0.0\t502\t"
        "go: github.com: 503 Service Unavailable"
    ]
    assert seen["goproxy"] == f"go env -w GOPROXY={origin}"
    assert seen["netrc"].splitlines() == [
        f"machine {origin.removeprefix('http://')} login {USER} password <your password>",
        f"machine 127.0.0.1 login {USER} password <your password>",
    ]
    assert PASSWORD not in seen["netrc"]
    assert seen["searched"] == [MODULES[0]]
    assert "no module matches" in seen["no_match"]
    (newest, older) = seen["versions"]
    assert newest[:3] == ["v1.1.0", newest[1], "yes"]
    assert newest[1].endswith("KiB")
    assert newest[4].endswith("UTC")  # served above
    assert older[0] == "v1.0.0"
    assert older[3].endswith("UTC")
    assert older[4] == "never"

    # Layout, on boxes: the header across the top, the four cards side by side in one
    # row under it, the search above the modules, the failures below them, nothing
    # wider than the viewport; the screenshot is the viewport's size.
    assert _png_size(seen["screenshot"]) == (VIEWPORT["width"], VIEWPORT["height"])
    header, cards = seen["header_box"], seen["card_boxes"]
    assert header["y"] == 0
    assert header["width"] == VIEWPORT["width"]
    assert len({round(box["y"]) for box in cards}) == 1
    assert all(a["x"] + a["width"] <= b["x"] for a, b in itertools.pairwise(cards))
    assert cards[0]["y"] >= header["y"] + header["height"]
    assert seen["search_box"]["y"] >= cards[0]["y"] + cards[0]["height"]
    assert seen["modules_box"]["y"] > seen["search_box"]["y"]
    assert seen["failures_box"]["y"] > seen["modules_box"]["y"] + seen["modules_box"]["height"]
    assert seen["scroll_width"] <= VIEWPORT["width"]
