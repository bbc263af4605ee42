"""A small S3 client on httpx: SigV4-signed requests, streamed bodies, nothing more.

Signing is botocore's (:class:`botocore.auth.S3SigV4Auth`, pure computation); the
requests are httpx's, so everything runs under trio without an asyncio client.  Only
what :mod:`._s3` needs is here: GET/HEAD/PUT/DELETE of one object (PUT optionally
create-if-absent), ListObjectsV2 pages, and multipart uploads (and their listing, for
the sweep).  Errors are StorageErrors carrying S3's error code, never a credential.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
import trio
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import (
    ContainerProvider,
    Credentials,
    ReadOnlyCredentials,
    RefreshableCredentials,
)
from botocore.session import Session

from .._exceptions import NotFoundError, StorageError
from ._backend import CHUNK_SIZE

__all__ = [
    "Bucket",
    "CredentialSource",
    "FileRange",
    "ObjectHead",
    "S3Client",
    "S3PreconditionFailed",
]

_XMLNS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
#: Status codes worth a second try: the server's own transient faults.
_RETRY_STATUS = frozenset({500, 502, 503, 504})
_ATTEMPTS = 3
#: Bodies this large are hashed in a worker thread, not on the event loop.
_HASH_INLINE = 256 * 1024


class S3PreconditionFailed(Exception):
    """A create-if-absent write found the key taken (412): another save stored it."""


@dataclass(frozen=True)
class Bucket:
    """Where the objects live: ``endpoint`` ("" for AWS's own in ``region``), the bucket,
    and whether the bucket goes in the path (``ForcePathStyle``) or the host name."""

    bucket: str
    region: str
    endpoint: str = ""
    force_path_style: bool = False

    def base_url(self) -> str:
        endpoint = self.endpoint.rstrip("/") or f"https://s3.{self.region}.amazonaws.com"
        if self.force_path_style:
            return f"{endpoint}/{quote(self.bucket, safe='')}"
        parts = urlsplit(endpoint)
        return f"{parts.scheme}://{self.bucket}.{parts.netloc}{parts.path}"


@dataclass(frozen=True)
class CredentialSource:
    """Athens' ways of finding credentials, in its order: the default chain of the AWS
    SDK (``UseDefaultConfiguration``), else static keys, else a credentials endpoint
    (``CredentialsEndpoint`` + ``AwsContainerCredentialsRelativeURI``)."""

    key: str = ""
    secret: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    use_default_configuration: bool = False
    credentials_endpoint: str = ""
    container_relative_uri: str = ""

    def load(self) -> Credentials:
        """The credentials (blocking: the chain and the endpoint may ask the network)."""
        if self.use_default_configuration:
            found = Session().get_credentials()
            if found is None:
                raise StorageError("S3: the default AWS configuration has no credentials")
            return found
        if self.key:
            return Credentials(self.key, self.secret, self.token or None)
        full_uri = self.credentials_endpoint.rstrip("/") + self.container_relative_uri
        provider = ContainerProvider(environ={"AWS_CONTAINER_CREDENTIALS_FULL_URI": full_uri})
        try:
            found = provider.load()
        except Exception as exc:  # botocore raises many kinds; all mean "no credentials"
            raise StorageError(f"S3: no credentials from the credentials endpoint: {exc}") from None
        if found is None:
            raise StorageError("S3: the credentials endpoint gave no credentials")
        return found


class _Credentials:
    """Credentials, loaded once in a worker thread and refreshed there when due."""

    def __init__(self, source: CredentialSource) -> None:
        self._source = source
        self._loaded: Credentials | None = None
        self._lock = trio.Lock()

    async def current(self) -> ReadOnlyCredentials:
        async with self._lock:
            if self._loaded is None:
                self._loaded = await trio.to_thread.run_sync(self._source.load)
            loaded = self._loaded
            assert loaded is not None
            if isinstance(loaded, RefreshableCredentials) and loaded.refresh_needed():
                # A refresh asks the network: in a worker thread.
                return await trio.to_thread.run_sync(loaded.get_frozen_credentials)
        return loaded.get_frozen_credentials()


class _Signer(S3SigV4Auth):  # type: ignore[misc]  # botocore is untyped
    """S3's SigV4 with the payload's hash computed beforehand (streamed bodies are
    hashed from their file, in a worker thread)."""

    def payload(self, request: AWSRequest) -> str:
        return str(request.context["payload_sha256"])


@dataclass(frozen=True)
class ObjectHead:
    size: int
    last_modified: float  # seconds since the epoch
    etag: str


@dataclass(frozen=True)
class FileRange:
    """Bytes ``[offset, offset + length)`` of a file: a streamed request body."""

    path: Path
    offset: int
    length: int

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            remaining = self.length
            while remaining:
                chunk = f.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise StorageError(f"{self.path} is shorter than expected")
                digest.update(chunk)
                remaining -= len(chunk)
        return digest.hexdigest()


class _FileBody(httpx.AsyncByteStream):
    """A request body read from a file range in chunks.  An iterator object, not a
    generator: a server may answer (a 412) before reading it all, and then nothing is
    left for the garbage collector to finish; :meth:`aclose` closes the file."""

    def __init__(self, span: FileRange) -> None:
        self._span = span
        self._remaining = span.length
        self._opened: Any = None

    def __aiter__(self) -> _FileBody:
        return self

    async def __anext__(self) -> bytes:
        if not self._remaining:
            raise StopAsyncIteration
        if self._opened is None:
            self._opened = await trio.open_file(self._span.path, "rb", buffering=0)
            await self._opened.seek(self._span.offset)
        chunk: bytes = await self._opened.read(min(CHUNK_SIZE, self._remaining))
        if not chunk:
            raise StorageError(f"{self._span.path} is shorter than expected")
        self._remaining -= len(chunk)
        return chunk

    async def aclose(self) -> None:
        if self._opened is not None:
            await self._opened.aclose()


def _error_code(body: bytes) -> str:
    with contextlib.suppress(ET.ParseError):
        root = ET.fromstring(body)
        code = root.findtext("Code") or root.findtext(f"{_XMLNS}Code")
        if code:
            return code
    return ""


def _find_all(element: ET.Element, name: str) -> Iterator[ET.Element]:
    yield from element.iter(name)
    yield from element.iter(f"{_XMLNS}{name}")


def _text(element: ET.Element, name: str) -> str:
    found = element.find(name)
    if found is None:
        found = element.find(f"{_XMLNS}{name}")
    return "" if found is None or found.text is None else found.text


class S3Client:
    """Signed requests to one bucket over one httpx client."""

    def __init__(
        self, bucket: Bucket, credentials: CredentialSource, *, timeout: float = 30.0
    ) -> None:
        self.bucket = bucket
        self._base = bucket.base_url()
        self._credentials = _Credentials(credentials)
        self._http = httpx.AsyncClient(
            timeout=timeout, limits=httpx.Limits(max_connections=64, max_keepalive_connections=32)
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def url(self, key: str, query: dict[str, str] | None = None) -> str:
        # SigV4 signs the path as sent: every byte but unreserved ones and "/" escaped,
        # as S3 itself canonicalizes the key ("!" and "+" of escaped paths included).
        url = f"{self._base}/{quote(key, safe='/~')}"
        if query:
            url += "?" + urlencode(sorted(query.items()), quote_via=quote, safe="~")
        return url

    async def _signed(
        self, method: str, url: str, headers: dict[str, str], payload_sha256: str
    ) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, headers=headers)
        request.context["payload_sha256"] = payload_sha256
        _Signer(await self._credentials.current(), "s3", self.bucket.region).add_auth(request)
        return dict(request.headers.items())

    async def presign_get(self, key: str, expires: int) -> str:
        """A URL anyone may GET ``key`` by for ``expires`` seconds."""
        request = AWSRequest(method="GET", url=self.url(key))
        signer = S3SigV4QueryAuth(
            await self._credentials.current(), "s3", self.bucket.region, expires=expires
        )
        signer.add_auth(request)
        return str(request.url)

    async def send(
        self,
        method: str,
        key: str,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | FileRange = b"",
        stream: bool = False,
    ) -> httpx.Response:
        """One signed request, tried again on a connection failure or a 5xx (bodies are
        bytes or a file range, so a retry re-sends them).  A failure of the last try is a
        StorageError; the caller judges the status."""
        url = self.url(key, query)
        if isinstance(body, FileRange):
            payload = await trio.to_thread.run_sync(body.sha256)
        elif len(body) > _HASH_INLINE:
            payload = await trio.to_thread.run_sync(lambda: hashlib.sha256(body).hexdigest())
        else:
            payload = hashlib.sha256(body).hexdigest()
        what = f"S3 {method} {key}"
        for attempt in range(1, _ATTEMPTS + 1):
            signed = await self._signed(method, url, dict(headers or {}), payload)
            if isinstance(body, FileRange):
                # A Request given its stream gets no default headers: these two it needs.
                signed["Content-Length"] = str(body.length)
                signed["Host"] = httpx.URL(url).netloc.decode()
                streamed = _FileBody(body)
                request = httpx.Request(method, url, headers=signed, stream=streamed)
            else:
                request = self._http.build_request(method, url, headers=signed, content=body)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.HTTPError as exc:
                if attempt == _ATTEMPTS:
                    raise StorageError(f"{what}: {exc!r}") from None
            else:
                if response.status_code not in _RETRY_STATUS or attempt == _ATTEMPTS:
                    return response
                await response.aclose()
            finally:
                if isinstance(body, FileRange):
                    await streamed.aclose()
            await trio.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    async def failure(self, response: httpx.Response, what: str) -> StorageError:
        """The StorageError for an unexpected answer (S3's error code, never a secret)."""
        body = await response.aread()
        code = _error_code(body)
        return StorageError(f"S3 {what}: {response.status_code} {code}".rstrip())

    # --- objects --------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        """The object's bytes (NotFoundError if there is none)."""
        response = await self.send("GET", key)
        if response.status_code == 404:
            raise NotFoundError(f"{key} is not in storage")
        if response.status_code != 200:
            raise await self.failure(response, f"GET {key}")
        return response.content

    async def get_or_none(self, key: str) -> bytes | None:
        with contextlib.suppress(NotFoundError):
            return await self.get(key)
        return None

    async def head(self, key: str) -> ObjectHead | None:
        """The object's size and age, None if there is none."""
        response = await self.send("HEAD", key)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise await self.failure(response, f"HEAD {key}")
        modified = email.utils.parsedate_to_datetime(
            response.headers.get("Last-Modified", email.utils.formatdate())
        )
        return ObjectHead(
            int(response.headers.get("Content-Length", "0")),
            modified.timestamp(),
            response.headers.get("ETag", ""),
        )

    async def exists(self, key: str) -> bool:
        return await self.head(key) is not None

    async def put(
        self, key: str, body: bytes | FileRange, *, if_absent: bool, if_match: str = ""
    ) -> str:
        """Store ``body`` under ``key``; its ETag.  ``if_absent``: only if the key is free
        (``If-None-Match: *``); ``if_match``: only if the stored object has this ETag (a
        compare-and-swap); else raise S3PreconditionFailed."""
        headers = {"If-None-Match": "*"} if if_absent else {}
        if if_match:
            headers["If-Match"] = if_match
        for _ in range(_ATTEMPTS):
            response = await self.send("PUT", key, headers=headers, body=body)
            if response.status_code == 200:
                return str(response.headers.get("ETag", ""))
            if response.status_code == 412 and headers:
                raise S3PreconditionFailed(key)
            if response.status_code == 404 and if_match:
                raise S3PreconditionFailed(key)  # AWS: no object to match is a 404
            if response.status_code != 409:
                raise await self.failure(response, f"PUT {key}")
            # 409 ConditionalRequestConflict: a concurrent write of the key; S3 says
            # to try again, and the next try sees the winner (412) or a free key.
        raise await self.failure(response, f"PUT {key}")

    async def delete(self, key: str, *, if_match: str = "") -> None:
        """Remove ``key`` (gone already is fine); ``if_match``: only if the stored object
        has this ETag, else S3PreconditionFailed."""
        headers = {"If-Match": if_match} if if_match else {}
        response = await self.send("DELETE", key, headers=headers)
        if response.status_code == 412 and if_match:
            raise S3PreconditionFailed(key)
        if response.status_code not in (200, 204, 404):
            raise await self.failure(response, f"DELETE {key}")

    async def get_versioned(self, key: str) -> tuple[bytes, str, float, float] | None:
        """The object's bytes, ETag, Last-Modified and the server's Date (its clock,
        now), or None if there is none."""
        response = await self.send("GET", key)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise await self.failure(response, f"GET {key}")
        now = email.utils.formatdate(usegmt=True)
        modified, date = (
            email.utils.parsedate_to_datetime(response.headers.get(name, now)).timestamp()
            for name in ("Last-Modified", "Date")
        )
        return response.content, response.headers.get("ETag", ""), modified, date

    @contextlib.asynccontextmanager
    async def open_range(
        self, key: str, start: int, stop: int, *, if_match: str = ""
    ) -> AsyncIterator[httpx.Response]:
        """A streamed GET of bytes ``[start, stop)`` (``stop > start``); with
        ``if_match``, of that object only (another one under the key: NotFoundError)."""
        headers = {"Range": f"bytes={start}-{stop - 1}"}
        if if_match:
            headers["If-Match"] = if_match
        response = await self.send("GET", key, headers=headers, stream=True)
        try:
            if response.status_code in (404, 412):
                raise NotFoundError("the zip was removed from storage")
            if response.status_code not in (200, 206):
                raise await self.failure(response, f"GET {key}")
            length = response.headers.get("Content-Length")
            if response.status_code == 200 and length != str(stop - start):
                raise StorageError(f"S3 GET {key}: the server ignored the Range asked")
            yield response
        finally:
            await response.aclose()

    async def list_keys(
        self, prefix: str, *, delimiter: str = ""
    ) -> AsyncIterator[list[tuple[str, float]]]:
        """Pages of (key, last modified) under ``prefix`` (ListObjectsV2)."""
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if delimiter:
                query["delimiter"] = delimiter
            if token:
                query["continuation-token"] = token
            response = await self.send("GET", "", query=query)
            if response.status_code != 200:
                raise await self.failure(response, f"list {prefix!r}")
            root = ET.fromstring(response.content)
            page = []
            for item in _find_all(root, "Contents"):
                modified = _text(item, "LastModified")
                when = _parse_iso(modified) if modified else time.time()
                page.append((_text(item, "Key"), when))
            yield page
            token = _text(root, "NextContinuationToken")
            if _text(root, "IsTruncated") != "true" or not token:
                return

    async def list_uploads(self, prefix: str) -> AsyncIterator[list[tuple[str, str, float]]]:
        """Pages of unfinished multipart uploads under ``prefix``: (key, id, initiated)."""
        markers: dict[str, str] = {}
        while True:
            query = {"uploads": "", "prefix": prefix, **markers}
            response = await self.send("GET", "", query=query)
            if response.status_code != 200:
                raise await self.failure(response, f"list uploads {prefix!r}")
            root = ET.fromstring(response.content)
            yield [
                (_text(u, "Key"), _text(u, "UploadId"), _parse_iso(_text(u, "Initiated")))
                for u in _find_all(root, "Upload")
            ]
            markers = {
                "key-marker": _text(root, "NextKeyMarker"),
                "upload-id-marker": _text(root, "NextUploadIdMarker"),
            }
            if _text(root, "IsTruncated") != "true" or not markers["key-marker"]:
                return

    async def abort_upload(self, key: str, upload_id: str) -> None:
        response = await self.send("DELETE", key, query={"uploadId": upload_id})
        if response.status_code not in (200, 204, 404):
            raise await self.failure(response, f"abort upload of {key}")

    async def ready(self) -> None:
        response = await self.send("HEAD", "")
        if response.status_code != 200:
            raise StorageError(
                f"S3 bucket {self.bucket.bucket!r} cannot be used: {response.status_code}"
            )

    # --- multipart uploads ----------------------------------------------------------

    async def put_multipart(self, key: str, path: Path, size: int, part_size: int) -> None:
        """Upload ``path`` in parts of ``part_size`` bytes, each streamed from the file,
        and complete it only if ``key`` is free (S3PreconditionFailed otherwise).  An
        upload that fails or is cancelled is aborted."""
        response = await self.send("POST", key, query={"uploads": ""})
        if response.status_code != 200:
            raise await self.failure(response, f"start upload of {key}")
        upload_id = _text(ET.fromstring(response.content), "UploadId")
        completed = False
        try:
            parts = []
            for number, offset in enumerate(range(0, size, part_size), start=1):
                span = FileRange(path, offset, min(part_size, size - offset))
                query = {"partNumber": str(number), "uploadId": upload_id}
                response = await self.send("PUT", key, query=query, body=span)
                if response.status_code != 200:
                    raise await self.failure(response, f"upload part {number} of {key}")
                parts.append(
                    f"<Part><PartNumber>{number}</PartNumber>"
                    f"<ETag>{_xml_escape(response.headers['ETag'])}</ETag></Part>"
                )
            document = (
                "<CompleteMultipartUpload>" + "".join(parts) + "</CompleteMultipartUpload>"
            ).encode()
            for _ in range(_ATTEMPTS):
                response = await self.send(
                    "POST",
                    key,
                    query={"uploadId": upload_id},
                    headers={"If-None-Match": "*", "Content-Type": "application/xml"},
                    body=document,
                )
                if response.status_code != 409:
                    break
                # 409 ConditionalRequestConflict: as for put(), try again.
            if response.status_code == 412:
                raise S3PreconditionFailed(key)
            # S3 may answer 200 and report a failure in the body.
            if response.status_code != 200 or _error_code(response.content):
                raise await self.failure(response, f"complete upload of {key}")
            completed = True
        finally:
            if not completed:
                with trio.CancelScope(shield=True), contextlib.suppress(StorageError):
                    await self.abort_upload(key, upload_id)


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
