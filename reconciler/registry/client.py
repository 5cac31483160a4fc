"""The registry client: the only module that sends HTTP requests (distribution spec v2).

Every existence check maps status codes explicitly: 200 exists, 404 missing, anything else is
an error carrying the registry's error codes. Manifests are read with the full Accept list and
a size cap, and verified against the digest that was asked for (or announced). Blobs are
streamed and verified while they pass through.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from reconciler import __version__
from reconciler.errors import (
    AuthError,
    DocumentError,
    NotFoundError,
    ReferenceError_,
    RegistryError,
    RegistryErrorDetail,
)
from reconciler.oci.digest import Digest, verified
from reconciler.oci.document import MANIFEST_SIZE_LIMIT, Document, parse_document
from reconciler.oci.mediatypes import MANIFEST_ACCEPT
from reconciler.registry.auth import RegistryAuth, load_credentials
from reconciler.registry.transport import RegistryOptions, TransportPolicy, policy_for

log = logging.getLogger("reconciler.registry")

ERROR_BODY_LIMIT = 1024 * 1024
STREAM_CHUNK = 1024 * 1024
USER_AGENT = f"reconciler/{__version__}"


@dataclass(frozen=True)
class ManifestHead:
    """What a HEAD on a manifest tells: its digest, media type and size."""

    digest: Digest
    media_type: str | None
    size: int | None


class RegistryClient:
    """One registry host. Methods name the verb and the object, as the HTTP API does."""

    def __init__(self, policy: TransportPolicy, http: httpx.AsyncClient) -> None:
        self.policy = policy
        self.host = policy.host
        self._http = http

    def _url(self, path: str) -> str:
        return f"{self.policy.base_url}/v2/{path}"

    async def _send(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        request = self._http.build_request(method, url, headers=headers, content=content)
        try:
            response = await self._http.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"{type(exc).__name__}: {exc}", method=method, url=_safe(request.url)
            ) from exc
        log.debug("%s %s -> %s", method, _safe(request.url), response.status_code)
        return response

    async def _fail(self, response: httpx.Response, message: str) -> RegistryError:
        """An error for an unexpected answer, with the registry's error codes."""
        details: list[RegistryErrorDetail] = []
        try:
            body = await _read_capped(response, ERROR_BODY_LIMIT)
            payload = json.loads(body) if body else {}
            for item in payload.get("errors", []) if isinstance(payload, dict) else []:
                if isinstance(item, dict):
                    details.append(
                        RegistryErrorDetail(str(item.get("code", "")), str(item.get("message", "")))
                    )
        except (ValueError, RegistryError, httpx.HTTPError):
            pass  # the status alone still says what went wrong
        finally:
            await response.aclose()
        request = response.request
        cls: type[RegistryError] = RegistryError
        if response.status_code == 404:
            cls = NotFoundError
        elif response.status_code in (401, 403):
            cls = AuthError
        return cls(
            message,
            method=request.method,
            url=_safe(request.url),
            status=response.status_code,
            errors=details,
        )

    async def ping(self) -> None:
        response = await self._send("GET", f"{self.policy.base_url}/v2/")
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
        size = _int_header(response, "Content-Length")
        if header is None:
            # Some registries omit the digest on HEAD; the bytes are the only witness then.
            document = await self.get_manifest(repository, identifier)
            return ManifestHead(document.digest, document.media_type, len(document.raw))
        try:
            digest = Digest.parse(header)
        except ReferenceError_ as exc:
            raise RegistryError(
                f"bad Docker-Content-Digest from {self.host}: {exc}", method="HEAD", url=url
            ) from None
        return ManifestHead(digest, media_type, size)

    async def get_manifest(self, repository: str, identifier: str) -> Document:
        """Fetch and verify a manifest or index (4 MiB cap, digest checked)."""
        url = self._url(f"{repository}/manifests/{identifier}")
        response = await self._send("GET", url, headers={"Accept": MANIFEST_ACCEPT}, stream=True)
        if response.status_code != 200:
            raise await self._fail(response, f"GET manifest {repository}:{identifier}")
        try:
            raw = await _read_capped(response, MANIFEST_SIZE_LIMIT)
        finally:
            await response.aclose()
        expected: Digest | None = None
        if identifier.startswith(("sha256:", "sha512:")):
            expected = Digest.parse(identifier)
        elif "Docker-Content-Digest" in response.headers:
            expected = Digest.parse(response.headers["Docker-Content-Digest"])
        try:
            return parse_document(
                raw,
                response.headers.get("Content-Type"),
                expected,
                what=f"manifest {self.host}/{repository}:{identifier}",
            )
        except DocumentError:
            raise
        except ReferenceError_ as exc:
            raise DocumentError(f"manifest {repository}:{identifier}: {exc}") from None

    async def head_blob(self, repository: str, digest: Digest) -> int | None:
        """The size of a blob in `repository`, or None if the repository does not have it."""
        url = self._url(f"{repository}/blobs/{digest}")
        response = await self._send("HEAD", url)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise await self._fail(response, f"HEAD blob {repository}@{digest.short}")
        size = _int_header(response, "Content-Length")
        if size is None:
            raise RegistryError(
                f"HEAD blob {repository}@{digest.short}: no Content-Length", method="HEAD", url=url
            )
        return size

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
            announced = _int_header(response, "Content-Length")
            if size is not None and announced is not None and announced != size:
                raise RegistryError(
                    f"GET blob {repository}@{digest.short}: {announced} bytes, expected {size}",
                    method="GET",
                    url=url,
                )
            yield verified(
                _body(response, STREAM_CHUNK),
                digest,
                size if size is not None else announced,
                f"blob {self.host}/{repository}@{digest}",
            )
        finally:
            await response.aclose()

    async def get_blob(self, repository: str, digest: Digest, limit: int) -> bytes:
        """A small blob (an image config) read into memory, capped and verified."""
        chunks = []
        total = 0
        async with self.open_blob(repository, digest) as stream:
            async for chunk in stream:
                total += len(chunk)
                if total > limit:
                    raise DocumentError(f"blob {digest} is over the {limit}-byte limit")
                chunks.append(chunk)
        return b"".join(chunks)

    async def mount_blob(self, repository: str, digest: Digest, source: str) -> httpx.URL | None:
        """Cross-repository mount. None when mounted; else the upload session it opened."""
        url = self._url(f"{repository}/blobs/uploads/")
        response = await self._send(
            "POST",
            httpx.URL(url, params={"mount": str(digest), "from": source}),
            headers={"Content-Length": "0"},
        )
        if response.status_code == 201:
            await response.aclose()
            return None
        if response.status_code == 202:
            # The registry could not mount (no access, or no blob there) and opened an upload.
            return self._location(response)
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
        session: httpx.URL | None = None,
        chunk_size: int | None = None,
    ) -> None:
        """Upload a blob: one streamed PUT, or PATCH chunks then PUT when a chunk size is set
        (here or in the registry's options)."""
        location = session or await self.start_upload(repository)
        chunk_size = chunk_size or self.policy.chunk_size
        if chunk_size is None:
            response = await self._send(
                "PUT",
                location.copy_merge_params({"digest": str(digest)}),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                content=chunks,
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
                )
                if response.status_code != 202:
                    raise await self._fail(response, f"PATCH blob {digest.short} to {repository}")
                location = self._location(response)
                offset += len(piece)
            response = await self._send(
                "PUT",
                location.copy_merge_params({"digest": str(digest)}),
                headers={"Content-Length": "0"},
            )
        if response.status_code != 201:
            raise await self._fail(response, f"PUT blob {digest.short} to {repository}")
        stored = response.headers.get("Docker-Content-Digest")
        await response.aclose()
        if stored is not None and stored != str(digest):
            raise RegistryError(
                f"registry stored blob as {stored}, expected {digest}",
                method="PUT",
                url=_safe(response.request.url),
                status=201,
            )

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
                url=url,
                status=response.status_code,
            )

    def _location(self, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(
                "upload session without Location",
                method=response.request.method,
                url=_safe(response.request.url),
                status=response.status_code,
            )
        # Location may be relative; keep its query (the session's state lives there).
        return response.request.url.join(location)


class Registries:
    """One client per registry host, built from per-registry options; closed together."""

    def __init__(
        self,
        options: Mapping[str, RegistryOptions] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        concurrency: int = 8,
    ) -> None:
        self._options = dict(options or {})
        self._concurrency = concurrency
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._env = env
        self._timeout = timeout
        self._clients: dict[str, RegistryClient] = {}
        self._http: list[httpx.AsyncClient] = []

    def client(self, host: str) -> RegistryClient:
        client = self._clients.get(host)
        if client is None:
            policy = policy_for(host, self._options.get(host))
            http = httpx.AsyncClient(
                auth=RegistryAuth(host, load_credentials(host, self._env)),
                verify=policy.ssl_context(),
                timeout=httpx.Timeout(self._timeout, connect=10.0),
                follow_redirects=True,
                headers={"User-Agent": USER_AGENT},
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
            self._http.append(http)
            client = self._clients[host] = RegistryClient(policy, http)
        return client

    def slot(self, host: str) -> asyncio.Semaphore:
        """The per-registry limit on HEAD checks and blob transfers running at once.

        Each operation takes exactly one slot (a copy takes its destination's), so a limit of 1
        cannot deadlock a copy between two repositories of one registry.
        """
        slot = self._slots.get(host)
        if slot is None:
            slot = self._slots[host] = asyncio.Semaphore(self._concurrency)
        return slot

    async def aclose(self) -> None:
        for http in self._http:
            await http.aclose()
        self._http.clear()
        self._clients.clear()

    async def __aenter__(self) -> Registries:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    declared = _int_header(response, "Content-Length")
    if declared is not None and declared > limit:
        raise DocumentError(
            f"{response.request.url.path}: {declared} bytes, over the {limit}-byte limit"
        )
    body = bytearray()
    async for chunk in _body(response):
        body += chunk
        if len(body) > limit:
            raise DocumentError(f"{response.request.url.path}: body over the {limit}-byte limit")
    return bytes(body)


async def _body(response: httpx.Response, chunk_size: int | None = None) -> AsyncIterator[bytes]:
    """A response body as chunks; a transport failure mid-body becomes a RegistryError."""
    try:
        async for chunk in response.aiter_bytes(chunk_size):
            yield chunk
    except httpx.HTTPError as exc:
        request = response.request
        raise RegistryError(
            f"{type(exc).__name__} while reading the body: {exc}",
            method=request.method,
            url=_safe(request.url),
            status=response.status_code,
        ) from exc


async def _rechunk(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None or not value.isdigit():
        return None
    return int(value)


def _safe(url: httpx.URL) -> str:
    """A URL fit for logs and errors: no userinfo, no query (upload state, tokens)."""
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))
