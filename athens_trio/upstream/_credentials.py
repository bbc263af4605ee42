"""Credentials for private modules: NETRCPath, HGRCPath and GithubToken, as Athens has them.

Athens copies these into its own ``$HOME``.  athens-trio leaves the operator's home
alone: it builds a private home directory (mode 0700) holding ``.netrc`` and ``.hgrc``
(mode 0600), links in the real home's ``.gitconfig``, ``.config`` and ``.ssh`` so git
and ssh behave as before, and gives go ``HOME`` and ``NETRC`` pointing there.  The
token is written to that file only and never logged.  The directory is removed when
the pipeline closes; the pipeline makes it inside the server's run directory (see
``claim_run_dir``), so after a ``kill -9`` the next start removes it, token included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from .._exceptions import ConfigError

__all__ = ["private_home"]

# What git and ssh read from a home directory, linked into the private one.
_LINKED = (".gitconfig", ".config", ".ssh", ".git-credentials")


@contextlib.contextmanager
def private_home(
    *,
    netrc_path: str = "",
    hgrc_path: str = "",
    github_token: str = "",
    environ: Mapping[str, str] | None = None,
    parent: Path | None = None,
) -> Iterator[Path | None]:
    """A private home for the go process, or None when no credential is given.

    ``netrc_path`` and ``hgrc_path`` name files to copy in (NETRCPath, HGRCPath); a
    ``github_token`` (GithubToken) becomes the .netrc instead.  ``environ`` supplies the
    real ``HOME`` whose git and ssh settings are linked in; ``parent`` is where the home
    is made (None: the system temp dir).
    """
    if not (netrc_path or hgrc_path or github_token):
        yield None
        return
    environ = os.environ if environ is None else environ
    home = Path(tempfile.mkdtemp(prefix="athens-trio-home-", dir=parent))  # created 0700
    try:
        if github_token:
            _write_private(home / ".netrc", f"machine github.com login {github_token}\n")
        elif netrc_path:
            _write_private(home / ".netrc", _read(netrc_path, "NETRCPath"))
        if hgrc_path:
            _write_private(home / ".hgrc", _read(hgrc_path, "HGRCPath"))
        real_home = environ.get("HOME")
        if real_home:
            for name in _LINKED:
                if (Path(real_home) / name).exists():
                    (home / name).symlink_to(Path(real_home) / name)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _read(path: str, key: str) -> str:
    try:
        return Path(path).expanduser().read_text()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from exc


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
