"""A real S3 server on loopback for the S3 storage tests: moto's, in server mode.

moto (a test extra in pyproject.toml) honours ``If-None-Match: *`` on PutObject and on
CompleteMultipartUpload, as AWS does (412 when the key is taken).  Its check and its
write are two steps, so its server runs here single-threaded (one request at a time,
HTTP/1.0): then each conditional write is atomic, as AWS's is.  It does not check
signatures.  The server runs as a child process (``python -m tests.s3fixtures serve``,
which prints its port), one per test session and worker; each test gets a fresh bucket.

``python -m tests.s3fixtures build`` checks that the server can start (nothing to
build: moto is a Python package); a missing moto fails the tests, saying how to
install it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from athens_trio.storage._s3 import Bucket, CredentialSource, S3Storage

__all__ = ["S3Server", "s3_bucket", "s3_server", "start_s3_server"]

REGION = "us-east-1"
KEY = "athens-trio-test-key"
SECRET = "athens-trio-test-secret"
INSTALL_HINT = "moto's S3 server is missing: pip install -e '.[test]' (moto[s3], flask-cors)"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>

    def credentials(self) -> CredentialSource:
        return CredentialSource(KEY, SECRET)

    def bucket(self, name: str) -> Bucket:
        return Bucket(name, REGION, self.endpoint, force_path_style=True)

    def storage(self, bucket: str, **kwargs: Any) -> S3Storage:
        return S3Storage(self.bucket(bucket), self.credentials(), **kwargs)

    def env(self, bucket: str, **extra: str) -> dict[str, str]:
        """Athens' environment variables for StorageType s3 on this server."""
        return {
            "ATHENS_STORAGE_TYPE": "s3",
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "ATHENS_S3_BUCKET_NAME": bucket,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_FORCE_PATH_STYLE": "true",
            **extra,
        }

    def _client(self) -> Any:
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
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


def start_s3_server() -> tuple[subprocess.Popen[bytes], S3Server]:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.fail(INSTALL_HINT)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.s3fixtures", "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()
    if not line.isdigit():
        _stop(process)
        pytest.fail(f"moto's S3 server did not start ({line!r}); {INSTALL_HINT}")
    return process, S3Server(f"http://127.0.0.1:{line}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    process, server = start_s3_server()
    try:
        yield server
    finally:
        _stop(process)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    return s3_server.create_bucket()


def _serve() -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=False, request_handler=MotoRequestHandler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def main(argv: list[str]) -> None:
    if argv[1:] == ["serve"]:
        _serve()
    elif argv[1:] == ["build"]:
        process, server = start_s3_server()
        try:
            server.create_bucket()
        finally:
            _stop(process)
        print(f"moto's S3 server runs ({server.endpoint} was used)")
    else:
        sys.exit("usage: python -m tests.s3fixtures serve|build")


if __name__ == "__main__":
    main(sys.argv)
