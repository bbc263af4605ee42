"""What the scenarios fetch and serve, made locally: git repositories and stored versions.

Git fixtures are bare repositories under ``<repos>/athens-bench/<name>`` (one
``git init --bare`` and one ``git fast-import`` each), and git's environment
configuration rewrites ``https://github.com/`` to ``file://<repos>/``, so ``go mod
download github.com/athens-bench/<name>@v1.0.0`` clones locally, never the internet:
the same mechanism as the test suite's ``tests/gofixtures.py``.

Stored versions skip git entirely: a zip of the right size with module-prefixed paths,
its ``.mod`` and ``.info``, written by :class:`athens_trio.DiskStorage` itself so the
layout is exactly the server's (and so exactly what nginx and ``GOPROXY=file://`` see).
"""

from __future__ import annotations

import os
import random
import subprocess
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from athens_trio.storage import Saver

from ._sizes import MIB

__all__ = [
    "OWNER",
    "GoEnv",
    "StoredVersion",
    "Tag",
    "make_go_env",
    "make_repo",
    "store_version",
    "write_consumer",
    "write_module_zip",
]

OWNER = "athens-bench"
_AUTHOR = "Athens Bench <bench@athens-trio.invalid>"
_EPOCH = 1704067200  # 2024-01-01T00:00:00Z
_DAY = 86400
# Git must not read the user's or the system's configuration (an insteadOf, a hook).
_GIT_ISOLATION = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


@dataclass(frozen=True)
class GoEnv:
    """How to point go at the fixture repositories, as a server and as a client."""

    repos_root: Path
    git: dict[str, str]
    """git's configuration variables alone: the insteadOf rewrite and its isolation."""

    def server_vars(self) -> dict[str, str]:
        """What the proxy's own go gets (GoBinaryEnvVars): direct from git, no sumdb."""
        return {
            **self.git,
            "GOPROXY": "direct",
            "GOSUMDB": "off",
            "GOTOOLCHAIN": "local",
            "GOFLAGS": "-modcacherw",
            "GOENV": "off",
        }

    def client(self, proxy: str, home: Path) -> dict[str, str]:
        """A go client's whole environment: ``GOPROXY=proxy``, caches fresh under ``home``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GO", "GIT_"))}
        env.update(self.git)
        env.update(
            GOPROXY=proxy,
            GOSUMDB="off",
            GONOSUMDB="",
            GOPRIVATE="",
            GONOPROXY="",
            GOINSECURE="",
            GOVCS="",
            GOTOOLCHAIN="local",
            GOFLAGS="-modcacherw -mod=mod",
            GOWORK="off",
            GO111MODULE="on",
            GOENV="off",
            GOPATH=str(home / "gopath"),
            GOMODCACHE=str(home / "gopath" / "pkg" / "mod"),
            GOCACHE=str(home / "gocache"),
            CGO_ENABLED="0",
            GIT_TERMINAL_PROMPT="0",
        )
        return env


def make_go_env(repos_root: Path) -> GoEnv:
    repos_root = repos_root.resolve()
    repos_root.mkdir(parents=True, exist_ok=True)
    git = {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": f"url.{repos_root.as_uri()}/.insteadOf",
        "GIT_CONFIG_VALUE_0": "https://github.com/",
        "GIT_CONFIG_KEY_1": "protocol.file.allow",
        "GIT_CONFIG_VALUE_1": "always",
        **_GIT_ISOLATION,
    }
    return GoEnv(repos_root=repos_root, git=git)


@dataclass(frozen=True)
class Tag:
    """One tagged commit of a fixture module."""

    version: str
    requires: tuple[str, ...] = ()
    """``"<module> <version>"`` lines for its go.mod."""
    padding: int = 0
    """Bytes of deterministic filler text, to make the module's zip bigger."""
    go: str = "1.21"
    """Its go.mod's go line (below 1.17, go reads its requirements' go.mod files too)."""


def _go_mod(module: str, requires: Sequence[str], go: str = "1.21") -> str:
    text = f"module {module}\n\ngo {go}\n"
    if requires:
        text += "\nrequire (\n" + "".join(f"\t{r}\n" for r in requires) + ")\n"
    return text


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def _filler(size: int, seed: str) -> bytes:
    rng = random.Random(seed)
    return rng.randbytes(size // 2).hex().encode()[:size]


def make_repo(go_env: GoEnv, name: str, tags: Sequence[Tag]) -> str:
    """Create the bare repository for ``github.com/athens-bench/<name>`` with one commit
    per tag, a day apart; return the module path."""
    module = f"github.com/{OWNER}/{name}"
    git_dir = go_env.repos_root / OWNER / name
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **_GIT_ISOLATION, "LC_ALL": "C"}
    stream: list[bytes] = []
    for mark, tag in enumerate(tags, start=1):
        when = f"{_EPOCH + mark * _DAY} +0000"
        files = {
            "go.mod": _go_mod(module, tag.requires, tag.go).encode(),
            "fixture.go": (
                "// Package fixture is an athens-trio benchmark fixture.\n"
                "package fixture\n\n"
                f'// Version is this commit\'s tag.\nconst Version = "{tag.version}"\n'
            ).encode(),
        }
        if tag.padding:
            files["filler.txt"] = _filler(tag.padding, f"{name}@{tag.version}")
        stream.append(b"commit refs/heads/main\nmark :%d\n" % mark)
        stream.append(f"author {_AUTHOR} {when}\ncommitter {_AUTHOR} {when}\n".encode())
        stream.append(_data(f"{name} {tag.version}".encode()))
        stream.append(b"deleteall\n")
        for path in sorted(files):
            stream.append(f"M 100644 inline {path}\n".encode() + _data(files[path]))
        stream.append(f"\nreset refs/tags/{tag.version}\nfrom :{mark}\n\n".encode())
    stream.append(b"done\n")
    for args, stdin in (
        (["-c", "init.defaultBranch=main", "init", "--bare", "--quiet"], None),
        (["fast-import", "--quiet", "--done"], b"".join(stream)),
    ):
        subprocess.run(
            ["git", f"--git-dir={git_dir}", *args],
            input=stdin,
            env=env,
            check=True,
            capture_output=True,
        )
    return module


def write_consumer(directory: Path, requires: Sequence[str]) -> Path:
    """A main module at ``directory`` that requires ``requires`` (``"<module> <version>"``)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "go.mod").write_text(_go_mod("example.invalid/bench/consumer", requires))
    (directory / "main.go").write_text("package main\n\nfunc main() {}\n")
    return directory


@dataclass(frozen=True)
class StoredVersion:
    module: str
    version: str
    zip_size: int


def write_module_zip(path: Path, module: str, version: str, size: int, mod: bytes) -> None:
    """A valid module zip of about ``size`` bytes: go.mod plus incompressible filler,
    stored (not deflated), every path prefixed ``<module>@<version>/``."""
    prefix = f"{module}@{version}/"
    rng = random.Random(f"{module}@{version}")
    overhead = 2 * len(prefix) + 256 + len(mod)
    remaining = max(0, size - overhead)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(prefix + "go.mod", mod)
        with archive.open(prefix + "filler.bin", "w", force_zip64=remaining > 1 << 31) as out:
            while remaining:
                chunk = min(remaining, 4 * MIB)
                out.write(rng.randbytes(chunk))
                remaining -= chunk


async def store_version(
    storage: Saver, module: str, version: str, zip_size: int, scratch: Path
) -> StoredVersion:
    """Save a synthetic version of ``module`` through the server's own storage (its
    DiskStorage, or the S3Storage of the bucket its replicas share)."""
    mod = f"module {module}\n\ngo 1.21\n".encode()
    info = f'{{"Version":"{version}","Time":"2024-01-01T00:00:00Z"}}'.encode()
    zip_path = scratch / f"{module.replace('/', '_')}@{version}.zip"
    await trio.to_thread.run_sync(write_module_zip, zip_path, module, version, zip_size, mod)
    size = (await trio.Path(zip_path).stat()).st_size
    await storage.save(module, version, info=info, mod=mod, zip_file=zip_path)
    return StoredVersion(module, version, size)
