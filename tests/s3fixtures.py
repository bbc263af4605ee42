"""Real S3 servers on loopback for the S3 storage tests: moto's, in server mode.

moto (a test extra in pyproject.toml) honours ``If-None-Match: *`` on PutObject and on
CompleteMultipartUpload, as AWS does (412 when the key is taken).  Its check and its
write are two steps, so its server runs here single-threaded (one request at a time,
HTTP/1.0): then each conditional write is atomic, as AWS's is.

Two servers, each a child process (``python -m tests.s3fixtures serve [--check]``, which
prints what a client needs) started once per test session and worker:

- :func:`s3_server` checks every request's SigV4 signature (moto's IAM enforcement, from
  the first request: ``INITIAL_NO_AUTH_ACTION_COUNT=0``) against an IAM user's key made
  at start; a request signed wrongly gets 403 SignatureDoesNotMatch.
- :func:`s3_open_server` checks none, for what moto cannot check: anonymous reads of a
  public bucket and presigned (query-string) URLs.

And a third, a real S3 server in Go: :func:`versitygw_server` (versitygw's posix
gateway, built once from the Go module proxy into a cache directory named by its
version), which checks header and presigned signatures alike and honours
``If-None-Match: *`` on PutObject and CompleteMultipartUpload.

Each test gets a fresh bucket (:func:`s3_bucket`, :func:`s3_open_bucket`).
``python -m tests.s3fixtures build`` builds versitygw (unless built) and checks that
every server starts; a missing moto or versitygw fails the tests, saying how to
install or build it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import pytest

from athens_trio.storage._s3 import Bucket, CredentialSource, S3Storage

from .gofixtures import find_go_binary

__all__ = [
    "REGION",
    "S3Server",
    "build_versitygw",
    "s3_bucket",
    "s3_open_bucket",
    "s3_open_server",
    "s3_server",
    "start_s3_server",
    "stop_s3_server",
    "versitygw_server",
]

REGION = "us-east-1"
#: The open server takes any key; the checking one makes its own.
_ANY_KEY = ("athens-trio-test-key", "athens-trio-test-secret")
INSTALL_HINT = "moto's S3 server is missing: pip install -e '.[test]' (moto[s3], flask-cors)"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    key: str
    secret: str = field(repr=False)

    def credentials(self) -> CredentialSource:
        return CredentialSource(self.key, self.secret)

    def bucket(self, name: str) -> Bucket:
        return Bucket(name, REGION, self.endpoint, force_path_style=True)

    def storage(self, bucket: str, **kwargs: Any) -> S3Storage:
        return S3Storage(self.bucket(bucket), self.credentials(), **kwargs)

    def _client(self) -> Any:
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
        )

    def create_bucket(self) -> str:
        """A new, empty bucket; its name."""
        name = f"athens-{secrets.token_hex(6)}"
        client = self._client()
        client.create_bucket(Bucket=name)
        client.close()
        return name

    def let_anyone_read(self, bucket: str) -> None:
        """A bucket policy letting anyone GET its objects (a bucket served as a site)."""
        statement = {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*",
        }
        policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
        client = self._client()
        client.put_bucket_policy(Bucket=bucket, Policy=policy)
        client.close()


def start_s3_server(*, check_signatures: bool) -> tuple[subprocess.Popen[bytes], S3Server]:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.fail(INSTALL_HINT)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.s3fixtures", "serve", *(["--check"] * check_signatures)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    assert process.stdout is not None
    port = process.stdout.readline().decode().strip()
    if not port.isdigit():
        stop_s3_server(process)
        pytest.fail(f"moto's S3 server did not start ({port!r}); {INSTALL_HINT}")
    key, secret = _ANY_KEY
    if check_signatures:
        key, secret = (process.stdout.readline().decode().strip() for _ in range(2))
    return process, S3Server(f"http://127.0.0.1:{port}", key, secret)


def stop_s3_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    process, server = start_s3_server(check_signatures=True)
    try:
        yield server
    finally:
        stop_s3_server(process)


@pytest.fixture(scope="session")
def s3_open_server() -> Iterator[S3Server]:
    process, server = start_s3_server(check_signatures=False)
    try:
        yield server
    finally:
        stop_s3_server(process)


VERSITYGW = "github.com/versity/versitygw/cmd/versitygw"
VERSITYGW_VERSION = "v1.8.0"  # conditional writes since v1.0.18, fixed in v1.1


def versitygw_binary() -> Path:
    """Where the versitygw of VERSITYGW_VERSION lives once built (present or not)."""
    cache = os.environ.get("ATHENS_TRIO_TEST_CACHE") or platformdirs.user_cache_dir(
        "athens-trio-tests"
    )
    return Path(cache) / f"versitygw-{VERSITYGW_VERSION}"


def build_versitygw(go: str | None = None) -> Path:
    """``go install`` versitygw into the cache unless it is there; its path."""
    binary = versitygw_binary()
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent, prefix=".versitygw-") as gobin:
        env = dict(os.environ, GOBIN=gobin, GOFLAGS="-buildvcs=false", CGO_ENABLED="0")
        env.pop("GOWORK", None)
        subprocess.run(
            [go or find_go_binary(), "install", f"{VERSITYGW}@{VERSITYGW_VERSION}"],
            cwd=gobin,
            env=env,
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=1800,
        )
        os.replace(Path(gobin) / "versitygw", binary)  # concurrent builders rename whole
    return binary


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # a child process's start: only polling sees it
    stop_s3_server(process)
    pytest.fail(f"versitygw did not start on port {port}")


@pytest.fixture(scope="session")
def versitygw_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    binary = versitygw_binary()
    if not binary.exists():
        pytest.fail(f"versitygw is not built ({binary}): python -m tests.s3fixtures build")
    root = tmp_path_factory.mktemp("versitygw")
    key, secret = "athens-versity-key", secrets.token_hex(16)
    port = _free_port()
    process = subprocess.Popen(
        [str(binary), "--port", f"127.0.0.1:{port}", "posix", str(root)],
        env=dict(os.environ, ROOT_ACCESS_KEY=key, ROOT_SECRET_KEY=secret),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    _wait_for_port(port, process)
    try:
        yield S3Server(f"http://127.0.0.1:{port}", key, secret)
    finally:
        stop_s3_server(process)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    return s3_server.create_bucket()


@pytest.fixture
def s3_open_bucket(s3_open_server: S3Server) -> str:
    return s3_open_server.create_bucket()


def _serve(check_signatures: bool) -> None:
    """Serve moto's S3 on a free port; print the port, then (checking signatures) the
    key and secret of an IAM user allowed everything, which requests must be signed by."""
    if check_signatures:
        # Read by moto.settings at import: every request is authenticated from the first.
        os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=False, request_handler=MotoRequestHandler)
    lines = [str(server.server_address[1])]
    if check_signatures:
        iam = iam_backends[DEFAULT_ACCOUNT_ID]["global"]
        iam.create_user(REGION, "athens-trio")
        allow_all = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        document = json.dumps({"Version": "2012-10-17", "Statement": [allow_all]})
        iam.put_user_policy("athens-trio", "all", document)
        key = iam.create_access_key("athens-trio")
        lines += [key.access_key_id, key.secret_access_key]
    print("\n".join(lines), flush=True)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    server.serve_forever()


def _exit_with_parent(parent: int) -> None:
    """A test process killed without its teardown leaves no server behind."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def main(argv: list[str]) -> None:
    if argv[1:2] == ["serve"] and argv[2:] in ([], ["--check"]):
        _serve(check_signatures=argv[2:] == ["--check"])
    elif argv[1:] == ["build"]:
        print(f"versitygw at {build_versitygw()}")
        for check in (True, False):
            process, server = start_s3_server(check_signatures=check)
            try:
                server.create_bucket()
            finally:
                stop_s3_server(process)
        print("moto's S3 servers run")
    else:
        sys.exit("usage: python -m tests.s3fixtures serve [--check] | build")


if __name__ == "__main__":
    main(sys.argv)
