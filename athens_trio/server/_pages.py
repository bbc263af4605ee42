"""The operator's pages: ``/`` tells a user how to point go here; ``/robots.txt``.

The home page builds the ``GOPROXY`` value from the request itself (its scheme, its
``Host`` header, the ``PathPrefix``), so it is right behind any name the server is
reached by; everything taken from the request is HTML-escaped.
"""

from __future__ import annotations

import html
from urllib.parse import urlsplit

__all__ = ["ROBOTS_TXT", "home_page", "proxy_url"]

#: No crawler has any business here: every page is either a module or an endpoint.
ROBOTS_TXT = "User-agent: *\nDisallow: /\n"


def proxy_url(scheme: str, host: str, prefix: str) -> str:
    """What ``GOPROXY`` should say to reach this server."""
    return f"{scheme}://{host}{prefix.rstrip('/')}"


def home_page(*, url: str, auth: bool, version: str) -> str:
    """The home page for a server reached at ``url``; ``auth`` says basic auth is on."""
    shown = html.escape(url)
    auth_help = ""
    if auth:
        # go 1.24 and later match a netrc machine against host:port (when the URL has a
        # port), earlier versions against the bare host name: one line for each.
        location = urlsplit(url)
        machines = [location.netloc]
        if location.hostname and location.hostname != location.netloc:
            machines.append(location.hostname)
        lines = "\n".join(
            f"machine {html.escape(machine)} login <var>user</var> password <var>password</var>"
            for machine in machines
        )
        auth_help = f"""
<h2>Credentials</h2>
<p>This proxy asks for a user name and a password. The go command sends them from
your netrc (<code>~/.netrc</code>, or the file <code>NETRC</code> names), over HTTPS
only:</p>
<pre>{lines}</pre>"""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="robots" content="noindex">
<title>athens-trio: a Go module proxy</title>
</head>
<body>
<h1>athens-trio</h1>
<p>A Go module proxy. To fetch modules through it:</p>
<pre>go env -w GOPROXY={shown}</pre>
<p>or, for one command or one shell:</p>
<pre>export GOPROXY={shown}</pre>
<p>With <code>GOPROXY={shown},direct</code> the go command goes straight to the
source for any module this proxy says does not exist (404). Modules go must not look up
in the public checksum database belong in <code>GONOSUMDB</code> (or
<code>GOPRIVATE</code>).</p>{auth_help}
<p><small>athens-trio {html.escape(version)}</small></p>
</body>
</html>
"""
