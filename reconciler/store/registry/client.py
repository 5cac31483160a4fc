"""The registry client: the distribution spec v2 API, one method per verb and object.

Every existence check maps status codes explicitly: 200 exists, 404 missing, anything else is
an error carrying the registry's error codes. Manifests are read with the full Accept list and
a size cap, and verified against the digest that was asked for (or announced). Blobs are
streamed and verified while they pass through.

A small document (a manifest, an image config, a referrers index, a page of tags) whose body is
cut short, or whose bytes do not match their digest, is fetched again within the retry policy;
once the retries are spent, the error names the registry, the request path, what happened and
the tries. Its status was retried already, by the transport (http.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from reconciler.errors import (
    BodyError,
    DocumentError,
    ReferenceError_,
    RegistryError,
    VerificationError,
)
from reconciler.oci.digest import Digest, verified
from reconciler.oci.document import (
    MANIFEST_SIZE_LIMIT,
    Document,
    first_error,
    load_json,
    parse_document,
)
from reconciler.oci.location import Location
from reconciler.oci.mediatypes import MANIFEST_ACCEPT, OCI_INDEX
from reconciler.store.base import ManifestHead, UploadSession
from reconciler.store.registry.auth import log_safe
from reconciler.store.registry.budget import Budgets
from reconciler.store.registry.http import (
    HttpTransport,
    body_chunks,
    error_from,
    int_header,
    read_capped,
)
from reconciler.store.registry.limits import WireLimits
from reconciler.store.registry.retry import RetryPolicy
from reconciler.store.registry.transport import RegistryOptions, TransportPolicy

log = logging.getLogger("reconciler.registry")

T = TypeVar("T")

STREAM_CHUNK = 1024 * 1024
# Blobs up to this size (configs, small layers) go up in one request: a POST that carries the
# bytes and their digest (distribution spec, "POST then PUT" vs "single POST"; distribution 2.8
# takes it). A registry that answers 202 opened a session instead, and gets the bytes by PUT.
MONOLITHIC_LIMIT = 1024 * 1024


class TagList(BaseModel):
    """A page of `GET /v2/<name>/tags/list` (distribution spec, "Listing Tags")."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    tags: tuple[StrictStr, ...] | None = None  # null for a repository without tags


def next_page(url: httpx.URL, link: str | None) -> httpx.URL | None:
    """The `rel="next"` target of a `Link` header (RFC 8288), on the same origin only: a page
    link never takes a request, and its credentials, to another host."""
    for part in (link or "").split(","):
        target, _, params = part.strip().partition(">")
        if not target.startswith("<") or 'rel="next"' not in params.replace(" ", ""):
            continue
        following = url.join(target[1:])
        if (following.scheme, following.host, following.port) != (url.scheme, url.host, url.port):
            return None
        return following
    return None


class RegistryClient:
    """One registry host. Methods name the verb and the object, as the HTTP API does."""

    def __init__(self, policy: TransportPolicy, transport: HttpTransport) -> None:
        self.policy = policy
        self.host = policy.host
        self._transport = transport
        self._monolithic = True  # until the registry answers a single POST with a session
        self._referrers_api = True  # until the registry answers 404 on the referrers API

    def _url(self, path: str) -> httpx.URL:
        return httpx.URL(f"{self.policy.base_url}/v2/{path}")

    async def _send(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        stream: bool = False,
        retry_here: bool = True,
    ) -> httpx.Response:
        return await self._transport.request(
            self.host,
            method,
            url,
            headers=headers,
            content=content,
            stream=stream,
            retry_here=retry_here,
        )

    async def _fail(self, response: httpx.Response, message: str) -> RegistryError:
        return await error_from(response, message)

    async def ping(self) -> None:
        response = await self._send("GET", httpx.URL(f"{self.policy.base_url}/v2/"))
        if response.status_code != 200:
            raise await self._fail(response, f"{self.host} is not a registry (v2 ping)")

    async def head_manifest(self, repository: str, identifier: str) -> ManifestHead | None:
        """The digest a tag (or digest) names in `repository`, or None if there is none."""
        url = self._url(f"{repository}/manifests/{identifier}")
        response = await self._send("HEAD", url, headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise await self._fail(response, f"HEAD manifest {repository}:{identifier}")
        header = response.headers.get("Docker-Content-Digest")
        media_type = response.headers.get("Content-Type")
        if header is None:
            # Some registries omit the digest on HEAD; the bytes are the only witness then.
            document = await self.get_manifest(repository, identifier)
            return ManifestHead(document.digest, document.media_type, len(document.raw))
        try:
            digest = Digest.parse(header)
        except ReferenceError_ as exc:
            raise RegistryError(
                f"bad Docker-Content-Digest from {self.host}: {exc}",
                method="HEAD",
                url=log_safe(url),
            ) from None
        # No size: the digest is the authority, and the GET's verified bytes say the size.
        # Harbor answers a HEAD with another Content-Length than the GET, and some proxies
        # with 0 or none.
        return ManifestHead(digest, media_type, None)

    async def get_manifest(self, repository: str, identifier: str) -> Document:
        """Fetch and verify a manifest or index (4 MiB cap, digest checked)."""
        url = self._url(f"{repository}/manifests/{identifier}")

        async def fetch() -> tuple[bytes, httpx.Response]:
            headers = {"Accept": MANIFEST_ACCEPT}
            response = await self._send("GET", url, headers=headers, stream=True)
            if response.status_code != 200:
                raise await self._fail(response, f"GET manifest {repository}:{identifier}")
            raw = await _read_document(response, MANIFEST_SIZE_LIMIT)
            _check_digest(raw, _expected_digest(identifier, response))
            return raw, response

        raw, response = await self._fetch_document(url, fetch)
        try:
            return parse_document(
                raw,
                response.headers.get("Content-Type"),
                _expected_digest(identifier, response),
                what=f"manifest {self.host}/{repository}:{identifier}",
            )
        except DocumentError:
            raise
        except ReferenceError_ as exc:
            raise DocumentError(f"manifest {repository}:{identifier}: {exc}") from None

    async def _fetch_document(self, url: httpx.URL, fetch: Callable[[], Awaitable[T]]) -> T:
        """`fetch` (one GET of a small document) within the retry policy: its body cut short,
        or its bytes not matching their digest, it is fetched again."""
        tries = 0

        async def attempt() -> T:
            nonlocal tries
            tries += 1
            return await fetch()

        try:
            return await self._transport.retry.run(attempt, f"GET {log_safe(url)}")
        except RegistryError as exc:
            exc.retryable = False  # an error body cut short every time: the retries are spent
            raise
        except VerificationError as exc:
            if not exc.retryable:
                raise
            error = RegistryError(
                f"registry {self.host}: GET {url.path}: {exc}, "
                f"{tries} {'try' if tries == 1 else 'tries'}"
            )
            # Carried, not repeated in the message: the path is in it already.
            error.method, error.url = "GET", log_safe(url)
            raise error from exc

    async def head_blob(self, repository: str, digest: Digest) -> int | None:
        """The size of a blob in `repository`, or None if the repository does not have it."""
        url = self._url(f"{repository}/blobs/{digest}")
        response = await self._send("HEAD", url)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise await self._fail(response, f"HEAD blob {repository}@{digest.short}")
        size = int_header(response, "Content-Length")
        if size is None or (size == 0 and digest != Digest.of(b"", digest.algorithm)):
            # Some proxies answer a HEAD with no Content-Length, or 0; only the blob of no
            # bytes at all has 0 bytes. The blob exists: its size is asked with a GET.
            return await self._blob_size(repository, digest)
        return size

    async def _blob_size(self, repository: str, digest: Digest) -> int:
        """A blob's size from a GET: its first byte's Content-Range total when the registry
        serves ranges (one byte read), else the whole body, counted and verified."""
        url = self._url(f"{repository}/blobs/{digest}")
        for headers in ({"Range": "bytes=0-0"}, {}):
            response = await self._send("GET", url, headers=headers, stream=True)
            try:
                if response.status_code in (206, 416):  # 416: no first byte, `bytes */0`
                    total = _range_total(response.headers.get("Content-Range"))
                    if total is not None:
                        return total
                    continue  # a range without its total says nothing: the whole body then
                if response.status_code != 200:
                    raise await self._fail(response, f"GET blob {repository}@{digest.short}")
                what = f"blob {self.host}/{repository}@{digest}"
                size = 0
                async for chunk in verified(
                    body_chunks(response, STREAM_CHUNK), digest, None, what
                ):
                    size += len(chunk)
                return size
            finally:
                await response.aclose()
        raise RegistryError(
            f"GET blob {repository}@{digest.short}: a partial answer to a GET without a range",
            method="GET",
            url=log_safe(url),
            status=206,
        )

    @asynccontextmanager
    async def open_blob(
        self, repository: str, digest: Digest, size: int | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A blob's bytes as a stream, verified against digest (and size) as they pass."""
        url = self._url(f"{repository}/blobs/{digest}")
        response = await self._send("GET", url, stream=True)
        try:
            if response.status_code != 200:
                raise await self._fail(response, f"GET blob {repository}@{digest.short}")
            announced = int_header(response, "Content-Length")
            if size is not None and announced is not None and announced != size:
                raise RegistryError(
                    f"GET blob {repository}@{digest.short}: {announced} bytes, expected {size}",
                    method="GET",
                    url=log_safe(url),
                )
            yield verified(
                body_chunks(response, STREAM_CHUNK, self._transport.limits),
                digest,
                size if size is not None else announced,
                f"blob {self.host}/{repository}@{digest}",
            )
        finally:
            await response.aclose()

    async def get_blob(self, repository: str, digest: Digest, limit: int) -> bytes:
        """A small blob (an image config) read into memory, capped and verified."""
        url = self._url(f"{repository}/blobs/{digest}")

        async def fetch() -> bytes:
            response = await self._send("GET", url, stream=True)
            if response.status_code != 200:
                raise await self._fail(response, f"GET blob {repository}@{digest.short}")
            raw = await _read_document(response, limit)
            _check_digest(raw, digest)
            return raw

        return await self._fetch_document(url, fetch)

    async def mount_blob(
        self, repository: str, digest: Digest, source: str
    ) -> UploadSession | None:
        """Cross-repository mount. None when mounted; else the upload session it opened."""
        url = self._url(f"{repository}/blobs/uploads/")
        response = await self._send(
            "POST",
            url.copy_merge_params({"mount": str(digest), "from": source}),
            headers={"Content-Length": "0"},
        )
        if response.status_code == 201:
            await response.aclose()
            return None
        if response.status_code == 202:
            # The registry could not mount (no access, or no blob there) and opened an upload.
            return UploadSession(str(self._location(response)))
        raise await self._fail(response, f"mount {digest.short} from {source} into {repository}")

    async def start_upload(self, repository: str) -> httpx.URL:
        response = await self._send(
            "POST", self._url(f"{repository}/blobs/uploads/"), headers={"Content-Length": "0"}
        )
        if response.status_code != 202:
            raise await self._fail(response, f"start upload to {repository}")
        return self._location(response)

    async def upload_blob(
        self,
        repository: str,
        digest: Digest,
        size: int,
        chunks: AsyncIterable[bytes],
        *,
        session: UploadSession | None = None,
        chunk_size: int | None = None,
    ) -> None:
        """Upload a blob: a small one in a single POST, else one streamed PUT, or PATCH chunks
        then PUT when a chunk size is set (here or in the registry's options)."""
        chunk_size = chunk_size or self.policy.chunk_size
        if session is None and chunk_size is None and size <= MONOLITHIC_LIMIT and self._monolithic:
            data = await _collect(chunks, size)  # verified by the stream before anything is sent
            location = await self._post_blob(repository, digest, data)
            if location is None:
                return
            chunks = _once(data)
        else:
            location = httpx.URL(session.url) if session else await self.start_upload(repository)
        if chunk_size is None:
            response = await self._send(
                "PUT",
                location.copy_merge_params({"digest": str(digest)}),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                content=chunks,
                retry_here=False,
            )
        else:
            offset = 0
            async for piece in _rechunk(chunks, chunk_size):
                response = await self._send(
                    "PATCH",
                    location,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(len(piece)),
                        "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                    },
                    content=piece,
                    retry_here=False,
                )
                if response.status_code != 202:
                    raise await self._fail(response, f"PATCH blob {digest.short} to {repository}")
                location = self._location(response)
                offset += len(piece)
            response = await self._send(
                "PUT",
                location.copy_merge_params({"digest": str(digest)}),
                headers={"Content-Length": "0"},
                retry_here=False,
            )
        if response.status_code != 201:
            raise await self._fail(response, f"PUT blob {digest.short} to {repository}")
        await response.aclose()
        _check_stored(response, digest)

    async def _post_blob(self, repository: str, digest: Digest, data: bytes) -> httpx.URL | None:
        """A single-POST upload; None when stored, else the session the registry opened."""
        url = self._url(f"{repository}/blobs/uploads/").copy_merge_params({"digest": str(digest)})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        response = await self._send("POST", url, headers=headers, content=data, retry_here=False)
        if response.status_code == 202:
            await response.aclose()
            self._monolithic = False  # this registry wants POST then PUT: no body in vain
            return self._location(response)
        if response.status_code in (400, 405, 415):
            # The request form itself refused (some registries): POST then PUT from now on.
            await response.aclose()
            self._monolithic = False
            return await self.start_upload(repository)
        if response.status_code != 201:
            raise await self._fail(response, f"POST blob {digest.short} to {repository}")
        _check_stored(response, digest)
        await response.aclose()
        return None

    async def put_manifest(
        self, repository: str, identifier: str, raw: bytes, media_type: str, digest: Digest
    ) -> None:
        """PUT a manifest or index under a digest or a tag; check the digest the registry saw."""
        url = self._url(f"{repository}/manifests/{identifier}")
        response = await self._send("PUT", url, headers={"Content-Type": media_type}, content=raw)
        if response.status_code not in (200, 201):
            raise await self._fail(response, f"PUT manifest {repository}:{identifier}")
        header = response.headers.get("Docker-Content-Digest")
        await response.aclose()
        if header is not None and header != str(digest):
            raise RegistryError(
                f"registry stored manifest as {header}, expected {digest}",
                method="PUT",
                url=log_safe(url),
                status=response.status_code,
            )

    async def list_referrers(self, repository: str, digest: Digest) -> bytes | None:
        """`GET /v2/<name>/referrers/<digest>` (distribution spec 1.1): the index of artifacts
        whose subject is `digest`; None when the registry has no referrers API (a 404, as
        distribution 2.8 answers: asked once per host and process)."""
        if not self._referrers_api:
            return None
        url = self._url(f"{repository}/referrers/{digest}")

        async def fetch() -> bytes | None:
            response = await self._send("GET", url, headers={"Accept": OCI_INDEX}, stream=True)
            if response.status_code == 404:
                await response.aclose()
                self._referrers_api = False
                return None
            if response.status_code != 200:
                raise await self._fail(response, f"GET referrers of {repository}@{digest}")
            return await _read_document(response, MANIFEST_SIZE_LIMIT)

        return await self._fetch_document(url, fetch)

    async def list_tags(self, repository: str, limit: int = 10_000) -> list[str]:
        """The tags of a repository, following `Link` pages. More than `limit` tags is an error
        rather than a silent cut (a selection over part of a list would pick the wrong tags);
        a page that links to a page already read, or an empty page with a next link, ends it
        (a hostile or broken registry cannot keep us paging for ever)."""
        url: httpx.URL | None = self._url(f"{repository}/tags/list").copy_merge_params({"n": 1000})
        tags: list[str] = []
        fetched: set[str] = set()
        while url is not None and str(url) not in fetched:
            fetched.add(str(url))
            answer = await self._tag_page(repository, url)
            if answer is None:
                return tags
            raw, response = answer
            what = f"tag list of {self.host}/{repository}"
            try:
                page = TagList.model_validate(load_json(raw, what, MANIFEST_SIZE_LIMIT))
            except ValidationError as exc:
                raise DocumentError(f"{what}: {first_error(exc)}") from None
            tags += page.tags or ()
            if len(tags) > limit:
                raise DocumentError(f"{what}: more than {limit} tags; refused")
            url = next_page(url, response.headers.get("Link")) if page.tags else None
        return tags

    async def _tag_page(
        self, repository: str, url: httpx.URL
    ) -> tuple[bytes, httpx.Response] | None:
        """One page of a tag list, and its answer (for its Link); None for a 404."""

        async def fetch() -> tuple[bytes, httpx.Response] | None:
            response = await self._send("GET", url, stream=True)
            if response.status_code == 404:
                await response.aclose()
                return None
            if response.status_code != 200:
                raise await self._fail(response, f"list tags of {repository}")
            return await _read_document(response, MANIFEST_SIZE_LIMIT), response

        return await self._fetch_document(url, fetch)

    async def delete_manifest(self, repository: str, identifier: str) -> int:
        """DELETE a manifest by digest or tag; returns the status (202 deleted, 404 gone)."""
        url = self._url(f"{repository}/manifests/{identifier}")
        response = await self._send("DELETE", url)
        await response.aclose()
        return response.status_code

    def _location(self, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(
                "upload session without Location",
                method=response.request.method,
                url=log_safe(response.request.url),
                status=response.status_code,
            )
        # Location may be relative; keep its query (the session's state lives there).
        return response.request.url.join(location)


class RegistryRepository:
    """One repository of a registry, as a store (reconciler.store.base): reads, writes, mounts
    from other repositories of the same registry, and deletes tags."""

    def __init__(self, client: RegistryClient, location: Location) -> None:
        self.client = client
        self.location = location
        self.repository = location.repository

    async def head_manifest(self, identifier: str) -> ManifestHead | None:
        return await self.client.head_manifest(self.repository, identifier)

    async def get_manifest(self, identifier: str) -> Document:
        return await self.client.get_manifest(self.repository, identifier)

    async def head_blob(self, digest: Digest) -> int | None:
        return await self.client.head_blob(self.repository, digest)

    def open_blob(
        self, digest: Digest, size: int | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self.client.open_blob(self.repository, digest, size)

    async def get_blob(self, digest: Digest, limit: int) -> bytes:
        return await self.client.get_blob(self.repository, digest, limit)

    async def list_tags(self, limit: int = 10_000) -> list[str]:
        return await self.client.list_tags(self.repository, limit)

    async def list_referrers(self, digest: Digest) -> bytes | None:
        return await self.client.list_referrers(self.repository, digest)

    async def upload_blob(
        self,
        digest: Digest,
        size: int,
        chunks: AsyncIterable[bytes],
        *,
        session: UploadSession | None = None,
    ) -> None:
        await self.client.upload_blob(self.repository, digest, size, chunks, session=session)

    async def put_manifest(
        self, identifier: str, raw: bytes, media_type: str, digest: Digest
    ) -> None:
        await self.client.put_manifest(self.repository, identifier, raw, media_type, digest)

    async def mount_blob(self, digest: Digest, source: Location) -> UploadSession | None:
        if source.store != self.location.store:
            raise ValueError(f"cannot mount from {source} into {self.location}")
        return await self.client.mount_blob(self.repository, digest, source.repository)

    async def delete_manifest(self, identifier: str) -> int:
        return await self.client.delete_manifest(self.repository, identifier)


class Registries:
    """One client per registry host over one shared transport; closed together."""

    def __init__(
        self,
        options: Mapping[str, RegistryOptions] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        on_response: Callable[[str, str, int], None] | None = None,
        budgets: Budgets | None = None,
        limits: WireLimits | None = None,
    ) -> None:
        self.transport = HttpTransport(options, env, timeout, retry, on_response, budgets, limits)
        self.retry = self.transport.retry
        self._clients: dict[str, RegistryClient] = {}

    def client(self, host: str) -> RegistryClient:
        """The client of a registry host (one per host, sharing the transport)."""
        client = self._clients.get(host)
        if client is None:
            client = self._clients[host] = RegistryClient(
                self.transport.policy(host), self.transport
            )
        return client

    async def aclose(self) -> None:
        await self.transport.aclose()
        self._clients.clear()

    async def __aenter__(self) -> Registries:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


async def _read_document(response: httpx.Response, limit: int) -> bytes:
    """A small document's body, capped; not read whole (cut short, misframed, too slow), it
    is a retryable VerificationError."""
    try:
        return await read_capped(response, limit)
    except BodyError as exc:
        cause = exc.__cause__
        why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        raise VerificationError(f"body not read whole ({why})", retryable=True) from exc
    finally:
        await response.aclose()


def _expected_digest(identifier: str, response: httpx.Response) -> Digest | None:
    """The digest a manifest's bytes must have: the one asked for, else the one announced."""
    if identifier.startswith(("sha256:", "sha512:")):
        return Digest.parse(identifier)
    if "Docker-Content-Digest" in response.headers:
        return Digest.parse(response.headers["Docker-Content-Digest"])
    return None


def _range_total(content_range: str | None) -> int | None:
    """The complete length in `Content-Range: bytes 0-0/1234` (RFC 9110, 14.4); None for `*`."""
    unit, _, rest = (content_range or "").strip().partition(" ")
    total = rest.rpartition("/")[2]
    return int(total) if unit == "bytes" and total.isdigit() else None


def _check_digest(raw: bytes, expected: Digest | None) -> None:
    if expected is not None and Digest.of(raw, expected.algorithm) != expected:
        raise VerificationError(
            f"body of {len(raw)} bytes does not match its digest {expected}", retryable=True
        )


def _check_stored(response: httpx.Response, digest: Digest) -> None:
    stored = response.headers.get("Docker-Content-Digest")
    if stored is not None and stored != str(digest):
        raise RegistryError(
            f"registry stored blob as {stored}, expected {digest}",
            method=response.request.method,
            url=log_safe(response.request.url),
            status=response.status_code,
        )


async def _collect(chunks: AsyncIterable[bytes], size: int) -> bytes:
    """A small blob's bytes, whole: a stream from a store checks digest and size as it ends,
    so nothing is sent before the bytes are known good (the registry checks the digest too)."""
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > size:
            raise VerificationError(f"blob: more than the {size} bytes announced", retryable=True)
    return bytes(data)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _rechunk(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
