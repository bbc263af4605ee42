"""S3 storage against a real S3 server (moto's, see :mod:`.s3fixtures`): the compliance
suite, go through the proxy and straight from the bucket, racing writers, a big zip in
bounded memory, zips redirected to presigned URLs, and the ``[Storage.S3]`` config."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import itertools
import json
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trio

from athens_trio import ConfigError, NotFoundError, StorageError, load_config
from athens_trio._config import S3StorageConfig, StorageConfig
from athens_trio._module import escape_path
from athens_trio.storage import CHUNK_SIZE, compliance
from athens_trio.storage._s3 import Bucket, CredentialSource, S3Storage
from athens_trio.storage._s3client import S3Client
from athens_trio.storage._s3lock import Lease, LeaseLost, S3Leases

from .conftest import make_config
from .gofixtures import GoFixtures
from .helpers import client_env, json_stream, run_go, served, wait_until, write_zip
from .s3fixtures import (
    REGION,
    S3Server,
    s3_bucket,
    s3_open_bucket,
    s3_open_server,
    s3_server,
    versitygw_server,
)

# Fixtures, used by name.
__all__ = ["s3_bucket", "s3_open_bucket", "s3_open_server", "s3_server", "versitygw_server"]

MODULE = "github.com/example/Mixed"
INFO = b'{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}'
MOD = b"module github.com/example/Mixed\n"
MiB = 1 << 20


@pytest.fixture(params=["moto", "versitygw"])
def any_s3(request: pytest.FixtureRequest) -> tuple[S3Server, str]:
    """Each real server in turn, with a fresh bucket."""
    server: S3Server = request.getfixturevalue(
        "s3_server" if request.param == "moto" else "versitygw_server"
    )
    return server, server.create_bucket()


@pytest.mark.parametrize("check", compliance.CHECKS.values(), ids=list(compliance.CHECKS))
async def test_compliance(
    check: compliance.Check, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    await check(lambda: s3_server.storage(s3_bucket), tmp_path)


@pytest.mark.slow
async def test_compliance_on_versitygw(versitygw_server: S3Server, tmp_path: Path) -> None:
    """The whole suite on a second, independent S3 server, each check under a prefix of
    its own (keys under a prefix, as ``Prefix`` puts them)."""
    bucket = versitygw_server.create_bucket()
    prefixes = (f"check-{n}" for n in itertools.count())
    await compliance.run_all(
        lambda: versitygw_server.storage(bucket, prefix=next(prefixes)), tmp_path
    )


async def test_presigned_zip_urls_work_and_an_altered_one_is_refused(
    versitygw_server: S3Server, tmp_path: Path
) -> None:
    """versitygw checks presigned signatures (moto does not): the URL gets the zip; a
    URL whose expiry was altered is refused."""
    bucket = versitygw_server.create_bucket()
    storage = versitygw_server.storage(bucket, redirect_expiry=60)
    zip_file = tmp_path / "z.zip"
    zip_file.write_bytes(b"the zip's bytes")
    try:
        await storage.save(
            "github.com/example/Mixed", "v2.0.0+incompatible", info=INFO, mod=MOD, zip_file=zip_file
        )
        stored = await storage.zip("github.com/example/Mixed", "v2.0.0+incompatible")
    finally:
        await storage.aclose()
    assert stored.redirect_url is not None
    async with httpx.AsyncClient() as client:
        good = await client.get(stored.redirect_url)
        altered = await client.get(
            stored.redirect_url.replace("X-Amz-Expires=60", "X-Amz-Expires=61")
        )
    assert good.status_code == 200
    assert good.content == b"the zip's bytes"
    assert altered.status_code == 403


async def test_a_wrong_secret_is_refused_by_the_server(s3_server: S3Server, s3_bucket: str) -> None:
    """The server checks signatures: ours pass (every other test here), a wrong one not."""
    wrong = CredentialSource(s3_server.key, s3_server.secret + "x")
    storage = S3Storage(s3_server.bucket(s3_bucket), wrong)
    try:
        with pytest.raises(StorageError, match="403 SignatureDoesNotMatch"):
            await storage.list_versions(MODULE)
    finally:
        await storage.aclose()


def _s3_config(s3_server: S3Server, bucket: str, **s3: Any) -> StorageConfig:
    return StorageConfig(
        s3=S3StorageConfig(
            region=REGION,
            key=s3_server.key,
            secret=s3_server.secret,
            bucket=bucket,
            endpoint=s3_server.endpoint,
            force_path_style=True,
            **s3,
        )
    )


def _by_version(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    assert not [r for r in results if r.get("Error")], results
    return {(r["Path"], r["Version"]): r for r in results}


async def _download(
    go_binary: str, tmp_path: Path, fx: GoFixtures, gocache: Path, goproxy: str, name: str
) -> dict[tuple[str, str], dict[str, Any]]:
    specs = [
        *(f"{fx.hello}@{v}" for v in fx.hello_versions),
        f"{fx.upper}@{fx.upper_version}",  # "!" in its escaped path
        *(f"{fx.incompatible}@{v}" for v in fx.incompatible_versions),  # "+" in versions
    ]
    env = client_env(tmp_path, fx, gocache, goproxy, name=name)
    done = await run_go(
        go_binary, ["mod", "download", "-json", *specs], cwd=tmp_path / name, env=env
    )
    found = _by_version(json_stream(done.stdout))
    assert len(found) == len(specs)
    return found


def _same_as_direct(
    found: dict[tuple[str, str], dict[str, Any]], direct: dict[tuple[str, str], dict[str, Any]]
) -> None:
    for key, expected in direct.items():
        assert found[key]["Sum"] == expected["Sum"], key
        assert found[key]["GoModSum"] == expected["GoModSum"], key
        assert Path(found[key]["Zip"]).read_bytes() == Path(expected["Zip"]).read_bytes()


@pytest.mark.slow
async def test_go_mod_download_through_s3_storage(
    tmp_path: Path,
    go_fixtures: GoFixtures,
    go_binary: str,
    go_build_cache: Path,
    s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """go gets through athens-trio on S3 (every request signed and checked) what it
    gets direct, and then again from storage alone, the repositories gone."""
    fx = go_fixtures
    direct = await _download(go_binary, tmp_path, fx, go_build_cache, "direct", "direct")
    storage = _s3_config(s3_server, s3_bucket, prefix="proxy")
    config = make_config(tmp_path, go_binary, fx, storage_type="s3", storage=storage)
    async with served(config) as server:
        _same_as_direct(
            await _download(go_binary, tmp_path, fx, go_build_cache, server.url, "first"), direct
        )
    config = make_config(tmp_path, "/nonexistent/go", fx, storage_type="s3", storage=storage)
    async with served(config) as server:  # a second replica, with no go at all
        _same_as_direct(
            await _download(go_binary, tmp_path, fx, go_build_cache, server.url, "second"), direct
        )


@pytest.mark.slow
async def test_two_replicas_racing_one_version_store_one_and_never_change_it(
    any_s3: tuple[S3Server, str], tmp_path: Path
) -> None:
    """Two backends (two replicas' clients) save other bytes of the same versions at
    once, again and again: each version is one writer's, whole, and stays so."""
    server, bucket = any_s3
    replicas = [server.storage(bucket), server.storage(bucket)]
    versions = [f"v1.2.{n}" for n in range(6)]
    counter = iter(range(1_000_000))

    def zip_file(data: bytes) -> Path:
        path = tmp_path / f"race-{next(counter)}.zip"
        path.write_bytes(data)
        return path

    def parts(writer: int, version: str, round_: int) -> dict[str, Any]:
        tag = f"{writer}-{round_}"
        return {
            "info": f'{{"Version":"{version}","By":"{tag}"}}'.encode(),
            "mod": f"module {MODULE} // {tag}\n".encode(),
            "zip_sum": f"h1:{tag}=",
            "mod_sum": f"h1:mod-{tag}=",
            "data": tag.encode() * 1000,
        }

    stored: dict[str, bytes] = {}
    wins: dict[str, list[int]] = {v: [] for v in versions}
    try:
        for round_ in range(3):

            async def save(writer: int, version: str, round_: int = round_) -> None:
                p = parts(writer, version, round_)
                saved = await replicas[writer].save(
                    MODULE,
                    version,
                    info=p["info"],
                    mod=p["mod"],
                    zip_file=zip_file(p["data"]),
                    zip_sum=p["zip_sum"],
                    mod_sum=p["mod_sum"],
                )
                if saved:
                    wins[version].append(writer)

            async with trio.open_nursery() as nursery:
                for version in versions:
                    for writer in (0, 1):
                        nursery.start_soon(save, writer, version)
            for version in versions:
                reader = replicas[round_ % 2]
                whole = (
                    await reader.info(MODULE, version)
                    + await reader.go_mod(MODULE, version)
                    + b"".join([c async for c in (await reader.zip(MODULE, version)).chunks()])
                )
                winner = json.loads(await reader.info(MODULE, version))["By"]
                p = parts(int(winner.split("-")[0]), version, int(winner.split("-")[1]))
                assert whole == p["info"] + p["mod"] + p["data"], version
                assert await reader.zip_sum(MODULE, version) == p["zip_sum"]
                assert await reader.mod_sum(MODULE, version) == p["mod_sum"]
                assert stored.setdefault(version, whole) == whole, "stored bytes changed"
        assert all(len(w) == 1 for w in wins.values()), wins
    finally:
        for replica in replicas:
            await replica.aclose()


def _big_zip(path: Path, size: int) -> str:
    write_zip(path, MODULE, "v1.0.0", size)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
async def test_a_big_zip_is_streamed_both_ways_in_bounded_memory(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """A 64 MiB zip goes up as a multipart upload and comes down in chunks: what
    Python holds at the peak stays a few chunks, never the zip."""
    source = tmp_path / "big.zip"
    expected = _big_zip(source, 64 * MiB)
    size = source.stat().st_size
    storage = s3_server.storage(s3_bucket)
    try:
        await storage.ready()
        await storage.save_mod(MODULE, "v1.0.0", info=INFO, mod=MOD)
        tracemalloc.start()
        try:
            assert await storage.save_zip(MODULE, "v1.0.0", zip_file=source)
            _, upload_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            stored = await storage.zip(MODULE, "v1.0.0")
            digest = hashlib.sha256()
            async for chunk in stored.chunks():
                assert len(chunk) <= CHUNK_SIZE
                digest.update(chunk)
            _, download_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        await storage.aclose()
    assert stored.size == size
    assert digest.hexdigest() == expected
    assert upload_peak < 8 * MiB, f"upload peak {upload_peak / MiB:.1f} MiB"
    assert download_peak < 8 * MiB, f"download peak {download_peak / MiB:.1f} MiB"


async def test_racing_multipart_uploads_complete_once(
    any_s3: tuple[S3Server, str], tmp_path: Path
) -> None:
    """Two replicas upload other 12 MiB zips of one version as multipart uploads at
    once: CompleteMultipartUpload's If-None-Match lets one through, the other's upload
    is aborted, and the zip is the winner's."""
    server, bucket = any_s3
    replicas = [server.storage(bucket, part_size=5 * MiB) for _ in range(2)]
    digests = [_big_zip(tmp_path / f"z{n}.zip", 12 * MiB) for n in range(2)]
    results: dict[int, bool] = {}
    try:
        await replicas[0].save_mod(MODULE, "v1.0.0", info=INFO, mod=MOD)

        async def save(n: int) -> None:
            zip_file = tmp_path / f"z{n}.zip"
            results[n] = await replicas[n].save_zip(MODULE, "v1.0.0", zip_file=zip_file)

        async with trio.open_nursery() as nursery:
            for n in range(2):
                nursery.start_soon(save, n)
        assert sorted(results.values()) == [False, True]
        winner = next(n for n, saved in results.items() if saved)
        stored = await replicas[1 - winner].zip(MODULE, "v1.0.0")
        digest = hashlib.sha256()
        async for chunk in stored.chunks():
            digest.update(chunk)
        assert digest.hexdigest() == digests[winner]
        uploads = await replicas[0]._client.send("GET", "", query={"uploads": ""})
        assert uploads.status_code == 200
        assert "<UploadId>" not in uploads.text, "an upload left behind"
    finally:
        for replica in replicas:
            await replica.aclose()


@pytest.mark.slow
async def test_zips_redirect_to_a_presigned_url_that_go_follows_and_the_bucket_is_a_goproxy(
    tmp_path: Path,
    go_fixtures: GoFixtures,
    go_binary: str,
    go_build_cache: Path,
    s3_open_server: S3Server,
    s3_open_bucket: str,
) -> None:
    """RedirectZips: a zip is a 307 to a presigned GET that go follows (HEAD answered by
    the proxy); then, the proxy gone, the bucket (a GOPROXY tree under the prefix) serves
    go the same bytes by itself.  (moto checks no presigned or anonymous request: the
    open server.)"""
    fx = go_fixtures
    direct = await _download(go_binary, tmp_path, fx, go_build_cache, "direct", "direct")
    storage = _s3_config(
        s3_open_server, s3_open_bucket, prefix="proxy", redirect_zips=True, redirect_expiry=120
    )
    config = make_config(tmp_path, go_binary, fx, storage_type="s3", storage=storage)
    async with served(config) as server:
        proxied = await _download(go_binary, tmp_path, fx, go_build_cache, server.url, "proxied")
        zip_url = f"{server.url}/{fx.hello}/@v/v1.0.0.zip"
        async with httpx.AsyncClient() as client:
            answer = await client.get(zip_url)
            head = await client.head(zip_url)
            followed = await client.get(zip_url, follow_redirects=True)
    _same_as_direct(proxied, direct)
    assert answer.status_code == 307
    assert answer.headers["Cache-Control"] == "no-store"
    location = answer.headers["Location"]
    assert location.startswith(f"{s3_open_server.endpoint}/{s3_open_bucket}/proxy/")
    query = parse_qs(urlsplit(location).query)
    assert query["X-Amz-Expires"] == ["120"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert "X-Amz-Signature" in query
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(followed.content)
    assert followed.content == Path(direct[fx.hello, "v1.0.0"]["Zip"]).read_bytes()

    s3_open_server.let_anyone_read(s3_open_bucket)  # as a bucket served as a static site
    bucket_url = f"{s3_open_server.endpoint}/{s3_open_bucket}/proxy"
    _same_as_direct(
        await _download(go_binary, tmp_path, fx, go_build_cache, bucket_url, "bucket"), direct
    )
    async with httpx.AsyncClient() as client:
        listed = await client.get(f"{bucket_url}/{escape_path(fx.hello)}/@v/list")
    assert listed.text.split() == list(fx.hello_versions)


async def test_sweep_removes_a_killed_saves_leftovers_only(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    storage = s3_server.storage(s3_bucket)
    client = storage._client
    try:
        zip_file = tmp_path / "z.zip"
        zip_file.write_bytes(b"zip")
        await storage.save(MODULE, "v1.0.0", info=INFO, mod=MOD, zip_file=zip_file)
        leftovers = [
            "github.com/example/!mixed/@v/v1.1.0.mod",  # a go.mod part without .info
            "github.com/example/!mixed/@v/v1.0.0.ziphash.other",  # not ours: kept
        ]
        for key in leftovers:
            await client.put(key, b"left", if_absent=True)
        assert await storage.sweep(older_than=3600) == 0, "too young to be abandoned"
        # A multipart upload a killed save never completed nor aborted (moto says every
        # upload began in 2010, so it comes after the age check).
        started = await client.send("POST", "github.com/x/@v/v1.0.0.zip", query={"uploads": ""})
        assert started.status_code == 200
        assert await storage.sweep(older_than=0) == 2
        assert [u async for u in client.list_uploads("")] == [[]]
        assert not await client.exists(leftovers[0])
        assert await client.exists(leftovers[1])
        assert await storage.exists(MODULE, "v1.0.0")
        assert await storage.list_versions(MODULE) == ["v1.0.0"]
        await storage.save_mod(MODULE, "v1.1.0", info=INFO, mod=MOD)
        assert await storage.go_mod(MODULE, "v1.1.0") == MOD
    finally:
        await storage.aclose()


async def test_sweep_looks_again_before_it_removes(s3_server: S3Server, s3_bucket: str) -> None:
    # A sweep's listing of a big bucket takes minutes: a go.mod part it listed without
    # its .info may be whole by the time it gets to it, and must stay.
    storage = s3_server.storage(s3_bucket)
    try:
        stem = "github.com/example/!mixed/@v/v1.2.0"
        await storage._client.put(f"{stem}.mod", MOD, if_absent=True)  # listed alone...
        await storage.save_mod(MODULE, "v1.2.0", info=INFO, mod=MOD)  # ...whole since
        later = time.time() + 60  # as if the listing were older than everything
        assert await storage._remove_leftover(stem, "mod", "info", later) == 0
        assert await storage.go_mod(MODULE, "v1.2.0") == MOD
        await storage._client.put(f"{stem[:-1]}3.mod", MOD, if_absent=True)
        assert await storage._remove_leftover(f"{stem[:-1]}3", "mod", "info", later) == 1
        assert not await storage._client.exists(f"{stem[:-1]}3.mod")
    finally:
        await storage.aclose()


async def test_a_missing_bucket_is_not_ready(s3_server: S3Server) -> None:
    storage = s3_server.storage("no-such-bucket")
    try:
        with pytest.raises(StorageError, match="no-such-bucket"):
            await storage.ready()
    finally:
        await storage.aclose()


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on loopback in a thread; its URL."""
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def credentials_endpoint() -> Iterator[str]:
    """A container-credentials endpoint on loopback, as ECS's agent serves them."""

    class Handler(_QuietHandler):
        def do_GET(self) -> None:
            if self.path != "/v2/credentials/task":
                self.send_error(404)
                return
            body = json.dumps(
                {
                    "AccessKeyId": "FROM-THE-ENDPOINT",
                    "SecretAccessKey": "endpoint-secret",
                    "Token": "endpoint-token",
                    "Expiration": "2999-01-01T00:00:00Z",
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with _http_server(Handler) as url:
        yield url


async def test_credentials_from_a_credentials_endpoint(
    s3_open_server: S3Server, s3_open_bucket: str, credentials_endpoint: str
) -> None:
    """CredentialsEndpoint + AwsContainerCredentialsRelativeURI, as Athens: the keys
    (and the session token) the endpoint hands out sign the requests."""
    source = CredentialSource(
        credentials_endpoint=credentials_endpoint,
        container_relative_uri="/v2/credentials/task",
    )
    storage = S3Storage(s3_open_server.bucket(s3_open_bucket), source, redirect_expiry=60)
    try:
        await storage.ready()
        url = await storage._client.presign_get("some/key", 60)
    finally:
        await storage.aclose()
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Credential"][0].startswith("FROM-THE-ENDPOINT/")
    assert f"/{REGION}/s3/aws4_request" in query["X-Amz-Credential"][0]
    assert query["X-Amz-Security-Token"] == ["endpoint-token"]


# --- [Storage.S3] configuration -----------------------------------------------------

S3_ENV = {
    "ATHENS_STORAGE_TYPE": "s3",
    "AWS_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "AKIA-EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "ATHENS_S3_BUCKET_NAME": "modules",
}


def test_config_reads_athens_s3_variables() -> None:
    config = load_config(
        None,
        {
            **S3_ENV,
            "AWS_SESSION_TOKEN": "token",
            "AWS_ENDPOINT": "http://127.0.0.1:9000",
            "AWS_FORCE_PATH_STYLE": "true",
            "AWS_USE_DEFAULT_CONFIGURATION": "false",
            "AWS_CREDENTIALS_ENDPOINT": "http://169.254.170.2",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x",
            "ATHENS_S3_PREFIX": "go/",
            "ATHENS_S3_REDIRECT_ZIPS": "1",
            "ATHENS_S3_REDIRECT_EXPIRY": "90",
        },
    )
    assert config.storage_type == "s3"
    assert config.storage.s3 == S3StorageConfig(
        region="eu-west-1",
        key="AKIA-EXAMPLE",
        secret="secret",
        token="token",
        bucket="modules",
        endpoint="http://127.0.0.1:9000",
        force_path_style=True,
        use_default_configuration=False,
        credentials_endpoint="http://169.254.170.2",
        aws_container_credentials_relative_uri="/v2/credentials/x",
        prefix="go/",
        redirect_zips=True,
        redirect_expiry=90,
    )


def test_config_reads_athens_s3_keys_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "athens.toml"
    path.write_text(
        'StorageType = "s3"\n'
        "[Storage.S3]\n"
        'Region = "us-west-2"\n'
        'Bucket = "mods"\n'
        "UseDefaultConfiguration = true\n"
        "ForcePathStyle = true\n"
        'Endpoint = "https://s3.example.com"\n'
        'AwsContainerCredentialsRelativeURI = "/creds"\n'
        "RedirectZips = true\n"
    )
    s3 = load_config(path, {}).storage.s3
    assert (s3.region, s3.bucket, s3.endpoint) == ("us-west-2", "mods", "https://s3.example.com")
    assert s3.use_default_configuration
    assert s3.force_path_style
    assert s3.redirect_zips
    assert s3.aws_container_credentials_relative_uri == "/creds"
    assert s3.redirect_expiry == 300


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"ATHENS_S3_BUCKET_NAME": ""}, "Storage.S3.Bucket"),
        ({"AWS_REGION": ""}, "Storage.S3.Region"),
        ({"AWS_SECRET_ACCESS_KEY": ""}, "Storage.S3.Secret"),
        ({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, "Storage.S3.Key"),
        ({"AWS_FORCE_PATH_STYLE": "maybe"}, "AWS_FORCE_PATH_STYLE"),
        ({"ATHENS_S3_REDIRECT_ZIPS": "yes please"}, "ATHENS_S3_REDIRECT_ZIPS"),
        ({"ATHENS_S3_REDIRECT_EXPIRY": "0"}, "ATHENS_S3_REDIRECT_EXPIRY"),
        ({"ATHENS_S3_REDIRECT_EXPIRY": "604801"}, "ATHENS_S3_REDIRECT_EXPIRY"),
        ({"AWS_ENDPOINT": "s3.example.com"}, "AWS_ENDPOINT"),
    ],
)
def test_config_errors_name_the_s3_key(change: dict[str, str], named: str) -> None:
    env = {k: v for k, v in {**S3_ENV, **change}.items() if v}
    with pytest.raises(ConfigError) as raised:
        load_config(None, env)
    assert named in raised.value.key


def test_s3_keys_are_not_checked_for_other_storage_types() -> None:
    assert load_config(None, {"ATHENS_STORAGE_TYPE": "disk"}).storage_type == "disk"


async def test_secrets_stay_out_of_the_description(s3_server: S3Server) -> None:
    storage = S3Storage(
        Bucket("mods", REGION, s3_server.endpoint, force_path_style=True),
        CredentialSource("AKIA-VISIBLE", "very-secret", "secret-token"),
        prefix="go",
    )
    await storage.aclose()
    assert storage.description == f"s3 bucket mods/go/ at {s3_server.endpoint}"
    assert "secret" not in repr(CredentialSource("k", "very-secret", "secret-token"))


# --- leases (the S3 single-flight's lock) -------------------------------------------


async def test_leases_one_holder_refresh_takeover_and_release(
    any_s3: tuple[S3Server, str],
) -> None:
    """Two replicas race for one lease: one gets it; the other gets it only once it has
    expired (server time), and the first then learns at its refresh that it lost it."""
    server, bucket = any_s3
    clients = [S3Client(server.bucket(bucket), server.credentials()) for _ in range(2)]
    try:
        first, second = (S3Leases(client, prefix="p", ttl=2) for client in clients)
        taken = [await first.try_acquire("m@v1.0.0"), await second.try_acquire("m@v1.0.0")]
        assert taken[0] is not None
        assert taken[1] is None
        held = await first.refresh(taken[0])
        assert held.etag != taken[0].etag
        assert await second.try_acquire("m@v1.0.0") is None
        assert await second.try_acquire("m@v2.0.0") is not None, "another name is free"

        async def taken_over() -> bool:
            return await second.try_acquire("m@v1.0.0") is not None

        await wait_until(taken_over, 15)  # once the 2 s lease expired, by the server
        with pytest.raises(LeaseLost):
            await first.refresh(held)
        await first.release(held)  # no longer ours: changes nothing
        assert await first.try_acquire("m@v1.0.0") is None, "the second still holds it"
    finally:
        for client in clients:
            await client.aclose()


async def test_a_released_lease_is_free_and_only_one_racer_takes_it(
    any_s3: tuple[S3Server, str],
) -> None:
    server, bucket = any_s3
    clients = [S3Client(server.bucket(bucket), server.credentials()) for _ in range(4)]
    try:
        leases = [S3Leases(client, ttl=60) for client in clients]
        held = await leases[0].try_acquire("one")
        assert held is not None
        await leases[0].release(held)
        won: list[Lease] = []

        async def race(n: int) -> None:
            lease = await leases[n].try_acquire("one")
            if lease is not None:
                won.append(lease)

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(race, n)
        assert len(won) == 1
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
def drops_if_none_match(s3_open_server: S3Server) -> Iterator[str]:
    """moto's open server behind a forwarder that drops ``If-None-Match``: an S3
    server that ignores conditional writes, as some S3-compatible ones do."""
    upstream = s3_open_server.endpoint

    class Handler(_QuietHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            dropped = ("host", "if-none-match", "connection", "content-length")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
            answer = httpx.request(
                self.command, upstream + self.path, headers=headers, content=body
            )
            self.send_response(answer.status_code)
            for name, value in answer.headers.items():
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.content)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

    with _http_server(Handler) as url:
        yield url


async def test_a_server_ignoring_conditional_writes_is_refused(
    drops_if_none_match: str, s3_open_server: S3Server, s3_open_bucket: str
) -> None:
    """Every save's "never replace" rests on If-None-Match: a server that ignores it
    would replace stored bytes silently, so the storage refuses to start on it."""
    bucket = Bucket(s3_open_bucket, REGION, drops_if_none_match, force_path_style=True)
    storage = S3Storage(bucket, s3_open_server.credentials())
    try:
        with pytest.raises(StorageError, match="ignores If-None-Match"):
            await storage.ready()
    finally:
        await storage.aclose()
    direct = s3_open_server.storage(s3_open_bucket)
    try:
        await direct.ready()  # the same server, asked as it is: accepted
    finally:
        await direct.aclose()


async def test_a_version_deleted_while_its_zip_goes_up_leaves_no_zip(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete (gc, an operator) between a zip save's check for the go.mod part and its
    upload: the save fails as "not stored" and leaves no zip object behind."""
    storage = s3_server.storage(s3_bucket)
    other = s3_server.storage(s3_bucket)  # gc, in another process
    try:
        await storage.ready()
        await storage.save_mod(MODULE, "v1.0.0", info=INFO, mod=MOD)
        put = S3Storage._put

        async def put_then_delete(self: S3Storage, key: str, body: Any) -> None:
            await put(self, key, body)
            if key.endswith(".zip"):
                await other.delete(MODULE, "v1.0.0")

        monkeypatch.setattr(S3Storage, "_put", put_then_delete)
        zip_file = tmp_path / "z.zip"
        write_zip(zip_file, MODULE, "v1.0.0", 100)
        with pytest.raises(NotFoundError):
            await storage.save_zip(MODULE, "v1.0.0", zip_file=zip_file, zip_sum="h1:z=")
        monkeypatch.undo()
        left = [key async for page in storage._client.list_keys("") for key, _ in page]
        assert not [key for key in left if "v1.0.0" in key], left
    finally:
        await storage.aclose()
        await other.aclose()
