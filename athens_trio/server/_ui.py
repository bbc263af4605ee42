"""``/ui``: a small web catalog for operators, rendered on the server.

- ``/ui`` (``?q=`` filters the modules by a substring of their path): the cache hit
  ratio, fetches and warms in flight, the stored modules with their version counts,
  the recent failures, and the lines a user copies (``GOPROXY``, the netrc line).
- ``/ui/module/<escaped module path>``: its versions, with size, when each was stored
  and when it was last served.

Behind the admin API's guard (basic auth configured, and the credentials checked by
the envelope).  No external assets: the style and the one line of script (the copy
buttons) are inline, and the Content-Security-Policy forbids loading anything else.
Everything shown is HTML-escaped; the password is never shown.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import trio
from quart import Response, request
from quart_trio import QuartTrio

from .._endpoints import CACHE_NONE
from .._module import check_path, escape_path, unescape_path
from .._pipeline import Pipeline
from .._semver import sort_versions
from ..ops import version_facts
from ._pages import proxy_url

__all__ = ["MAX_MODULES_SHOWN", "register"]

HTML = "text/html; charset=utf-8"
#: Modules listed on one page (the search narrows them down).
MAX_MODULES_SHOWN = 500
MODULE_PREFIX = "/ui/module/"
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

_STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600}
main{max-width:1100px;margin:0 auto;padding:16px 24px}
.cards{display:flex;gap:16px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;
flex:1;min-width:160px}
.card b{display:block;font-size:24px}
table{width:100%;border-collapse:collapse;background:#fff;margin:8px 0 24px}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e6e9ee}
td.num,th.num{text-align:right}
pre{background:#fff;border:1px solid #dde1e7;padding:8px 12px;overflow-x:auto;margin:4px 0}
form{margin:16px 0 0}
input[type=search]{width:100%;max-width:480px;padding:6px 8px;font:inherit}
.empty{color:#6b7380}
"""

_SCRIPT = (
    "document.querySelectorAll('button[data-copy]').forEach(b=>b.onclick=()=>"
    "navigator.clipboard.writeText(document.getElementById(b.dataset.copy).textContent))"
)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _size(size: int | None) -> str:
    if size is None:
        return "?"
    if size < 1024:
        return f"{size} B"
    if size < 1 << 20:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1 << 20):.1f} MiB"


def _page(title: str, body: str, home: str) -> Response:
    document = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<header><a href="{html.escape(home)}">athens-trio</a><span>{html.escape(title)}</span></header>
<main>
{body}
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""
    return Response(
        document,
        content_type=HTML,
        headers={"Cache-Control": CACHE_NONE, "Content-Security-Policy": _CSP},
    )


def _table(headers: Iterable[str], rows: list[list[str]], *, table_id: str, empty: str) -> str:
    """A table of already-escaped cells; a header starting with ``#`` is numeric."""
    heads = "".join(
        f'<th class="num">{h[1:]}</th>' if h.startswith("#") else f"<th>{h}</th>" for h in headers
    )
    numeric = [h.startswith("#") for h in headers]
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if n else f"<td>{c}</td>"
            for c, n in zip(row, numeric, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    if not rows:
        body = f'<tr><td class="empty" colspan="{len(numeric)}">{html.escape(empty)}</td></tr>'
    return f'<table id="{table_id}"><thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table>'


def _copy_block(block_id: str, text: str) -> str:
    return (
        f'<pre id="{block_id}">{html.escape(text)}</pre>'
        f'<button type="button" data-copy="{block_id}">Copy</button>'
    )


def register(
    app: QuartTrio,
    pipeline: Pipeline,
    *,
    guard: Callable[[], None],
    warms_in_flight: Callable[[], int],
) -> None:
    """Add ``/ui`` and ``/ui/module/...`` to ``app``; ``guard`` refuses when the admin
    API is off."""
    config = pipeline.config
    root = config.disk_root if config.storage_type == "disk" else None
    walks = trio.CapacityLimiter(1)  # one catalog walk at a time for the pages

    def links() -> tuple[str, str]:
        prefix = config.path_prefix.rstrip("/")
        return f"{prefix}/ui", f"{prefix}{MODULE_PREFIX}"

    def render(title: str, body: str) -> Response:
        return _page(title, body, links()[0])

    def setup_lines() -> str:
        url = proxy_url(request.scheme, request.host, config.path_prefix)
        # go 1.24 and later match host:port, earlier ones the bare host: one line each.
        location = urlsplit(url)
        machines = dict.fromkeys([location.netloc, location.hostname or location.netloc])
        netrc = "\n".join(
            f"machine {machine} login {config.basic_auth_user} password <your password>"
            for machine in machines
        )
        return (
            "<h2>Use this proxy</h2>"
            + _copy_block("goproxy-line", f"go env -w GOPROXY={url}")
            + "<p>The go command sends the credentials from <code>~/.netrc</code>"
            " (or <code>$NETRC</code>), over HTTPS only:</p>" + _copy_block("netrc-line", netrc)
        )

    @app.get("/ui")
    async def overview() -> Response:
        guard()
        query = request.args.get("q", "").strip()
        # One walk at a time in its own thread lane: never a lane the downloads use.
        catalog = pipeline.storage.catalog(limiter=walks)
        counts = Counter([module async for module, _ in catalog])
        matching = sorted(m for m in counts if query.lower() in m.lower())
        lookups = pipeline.lookups.statistics()
        hits, misses = sum(lookups.hits.values()), sum(lookups.misses.values())
        ratio = f"{100 * hits / (hits + misses):.1f}%" if hits + misses else "none yet"
        fetching = pipeline.fetches.statistics().in_progress
        _, module_link = links()
        cards = "".join(
            f'<div class="card" id="card-{key}"><b>{value}</b>{label}</div>'
            for key, value, label in (
                ("hit-ratio", ratio, f"cache hit ratio ({hits} hits, {misses} misses)"),
                ("fetching", str(fetching), "fetches in flight"),
                ("warming", str(warms_in_flight()), "warms running"),
                ("modules", str(len(counts)), f"modules, {sum(counts.values())} versions"),
            )
        )
        module_rows = [
            [
                f'<a href="{html.escape(module_link + quote(escape_path(m), safe="/!"))}">'
                f"{html.escape(m)}</a>",
                str(counts[m]),
            ]
            for m in matching[:MAX_MODULES_SHOWN]
        ]
        more = (
            f"<p>{len(matching) - MAX_MODULES_SHOWN} more: narrow the search.</p>"
            if len(matching) > MAX_MODULES_SHOWN
            else ""
        )
        failures = pipeline.activity.failures() if pipeline.activity else []
        failure_rows = [
            [
                html.escape(_when(f.time)),
                html.escape(f"{f.module}@{f.version}"),
                str(f.status),
                html.escape(f.message),
            ]
            for f in failures
        ]
        body = (
            f'<section class="cards">{cards}</section>'
            f'<form method="get" role="search"><input type="search" name="q" '
            f'value="{html.escape(query)}" placeholder="Search modules" '
            f'aria-label="Search modules"> <button type="submit">Search</button></form>'
            "<h2>Modules</h2>"
            + _table(
                ["Module", "#Versions"],
                module_rows,
                table_id="modules",
                empty="no module matches" if query else "nothing stored yet",
            )
            + more
            + "<h2>Recent failures</h2>"
            + _table(
                ["When", "What", "#Status", "Reason"],
                failure_rows,
                table_id="failures",
                empty="none",
            )
            + setup_lines()
        )
        return render("Catalog", body)

    @app.get("/ui/module/<anypath:_target>")
    async def module_page(_target: str) -> Response:
        guard()
        module = unescape_path(request.scope["path"].removeprefix(MODULE_PREFIX))
        check_path(module)
        versions = sort_versions(await pipeline.storage.list_versions(module))
        served = await pipeline.activity.last_served.served(module) if pipeline.activity else {}
        rows = []
        for version in reversed(versions):
            facts = await trio.to_thread.run_sync(version_facts, root, module, version)
            rows.append(
                [
                    html.escape(version),
                    _size(facts.size),
                    "yes" if facts.has_zip else "go.mod only",
                    html.escape(_when(facts.stored_at)),
                    html.escape(_when(served.get(version))),
                ]
            )
        body = f"<h2>{html.escape(module)}</h2>" + _table(
            ["Version", "#Size", "Zip", "Stored at", "Last served"],
            rows,
            table_id="versions",
            empty="nothing of it is stored",
        )
        return render(module, body)
