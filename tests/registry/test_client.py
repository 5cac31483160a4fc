"""The registry client against a real distribution registry."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from reconciler.errors import AuthError, DocumentError, RegistryError, VerificationError
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest, verified
from reconciler.oci.document import IndexDocument, ManifestDocument
from reconciler.store.registry.client import Registries
from reconciler.store.registry.retry import RetryPolicy
from tests.conftest import World
from tests.support.registry import Registry, start_registry
from tests.support.server import Answer, Received, canned_server

T = TypeVar("T")


def run(make: Callable[[Registries], Awaitable[T]], env: dict[str, str] | None = None) -> T:
    async def go() -> T:
        async with Registries(env=env or {"DOCKER_CONFIG": "/nonexistent"}) as registries:
            return await make(registries)

    return asyncio.run(go())


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_manifests_by_tag_and_digest(world: World) -> None:
    host = world.a.host

    async def go(registries: Registries) -> Any:
        client = registries.client(host)
        await client.ping()
        head = await client.head_manifest("base/multi", "1")
        missing = await client.head_manifest("base/multi", "nope")
        index = await client.get_manifest("base/multi", "1")
        child = await client.get_manifest("base/multi", str(world.multi.images[0].digest))
        return head, missing, index, child

    head, missing, index, child = run(go)
    assert missing is None
    assert str(head.digest) == world.multi.digest and head.media_type == mt.OCI_INDEX
    assert isinstance(index, IndexDocument) and index.raw == world.multi.root
    assert isinstance(child, ManifestDocument) and child.raw == world.multi.images[0].manifest


def test_blob_upload_monolithic_chunked_and_mount(world: World) -> None:
    host = world.a.host
    data = bytes(range(256)) * 1000
    digest = Digest.of(data)

    async def go(registries: Registries) -> Any:
        client = registries.client(host)
        before = await client.head_blob("client/one", digest)
        await client.upload_blob("client/one", digest, len(data), chunks(data))
        await client.upload_blob("client/two", digest, len(data), chunks(data), chunk_size=70_000)
        mounted = await client.mount_blob("client/three", digest, "client/one")
        # Mounting from a repository that lacks the blob opens an ordinary upload session.
        other = Digest.of(b"only here")
        session = await client.mount_blob("client/four", other, "client/one")
        assert session is not None
        await client.upload_blob("client/four", other, 9, chunks(b"only here"), session=session)
        sizes = [await client.head_blob(f"client/{r}", digest) for r in ("one", "two", "three")]
        async with client.open_blob("client/two", digest, len(data)) as stream:
            read = b"".join([c async for c in stream])
        return before, mounted, sizes, read, await client.head_blob("client/four", other)

    before, mounted, sizes, read, four = run(go)
    assert before is None and mounted is None
    assert sizes == [len(data)] * 3 and read == data and four == 9


def test_a_bad_digest_is_never_committed(world: World) -> None:
    host = world.a.host
    good = b"the real content" * 100
    digest = Digest.of(good)
    flipped = bytearray(good)
    flipped[500] ^= 1

    async def go(registries: Registries) -> Any:
        client = registries.client(host)
        with pytest.raises(VerificationError):
            await client.upload_blob(
                "client/bad",
                digest,
                len(good),
                verified(chunks(bytes(flipped), 300), digest, len(good), "test"),
            )
        # Without our check, the registry's own refusal comes back with its error code.
        with pytest.raises(RegistryError) as refused:
            await client.upload_blob("client/bad", digest, len(good), chunks(bytes(flipped)))
        return await client.head_blob("client/bad", digest), refused.value

    present, refused = run(go)
    assert present is None
    assert refused.status == 400 and "DIGEST_INVALID" in refused.codes


def test_put_manifest_and_registry_errors(world: World) -> None:
    host = world.a.host
    image = world.multi.images[0]

    async def go(registries: Registries) -> Any:
        client = registries.client(host)
        # Blobs are missing in this repository: the registry refuses, with its error code.
        with pytest.raises(RegistryError) as refused:
            await client.put_manifest(
                "client/empty", "1", image.manifest, mt.OCI_MANIFEST, Digest.of(image.manifest)
            )
        with pytest.raises(RegistryError) as unknown:
            await client.get_manifest("client/empty", "1")
        return refused.value, unknown.value

    refused, unknown = run(go)
    assert refused.status == 400 and "MANIFEST_BLOB_UNKNOWN" in refused.codes
    assert "/v2/client/empty/manifests/1" in str(refused)
    assert unknown.status == 404 and "MANIFEST_UNKNOWN" in unknown.codes


def test_manifest_digest_is_verified(world: World) -> None:
    host = world.a.host
    wrong = "sha256:" + "0" * 64

    async def go(registries: Registries) -> None:
        client = registries.client(host)
        with pytest.raises(RegistryError):  # the registry has no such digest: 404
            await client.get_manifest("base/multi", wrong)

    run(go)


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("htpasswd")
    hashed = subprocess.run(
        ["htpasswd", "-Bbn", "alice", "s3cret"], capture_output=True, text=True, check=True
    ).stdout
    (root / "htpasswd").write_text(hashed)
    registry = start_registry(
        f"auth:\n  htpasswd:\n    realm: test\n    path: {root / 'htpasswd'}\n"
    )
    yield registry
    registry.stop()


def test_basic_auth_from_docker_config(auth_registry: Registry, tmp_path: Path) -> None:
    host = auth_registry.host
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {host: {"auth": base64.b64encode(b"alice:s3cret").decode()}}})
    )
    data = b"authenticated blob"

    async def push(registries: Registries) -> int | None:
        client = registries.client(host)
        await client.upload_blob("private/x", Digest.of(data), len(data), chunks(data))
        return await client.head_blob("private/x", Digest.of(data))

    assert run(push, env={"DOCKER_CONFIG": str(tmp_path)}) == len(data)

    async def anonymous(registries: Registries) -> None:
        await registries.client(host).head_blob("private/x", Digest.of(data))

    with pytest.raises(AuthError, match="none are configured"):
        run(anonymous)
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {host: {"username": "alice", "password": "wrong"}}})
    )
    with pytest.raises(AuthError) as denied:
        run(anonymous, env={"DOCKER_CONFIG": str(tmp_path)})
    assert denied.value.status == 401 and "wrong" not in str(denied.value)


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": "sha256:" + "1" * 64, "size": 2},
        "layers": [],
    }
).encode()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            Answer(
                200,
                {"Content-Type": mt.OCI_INDEX},
                json.dumps(
                    {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [], "layers": []}
                ).encode(),
            ),
            "ambiguous",
        ),
        (Answer(200, {"Content-Type": mt.OCI_INDEX}, MANIFEST), "disagrees with Content-Type"),
        (Answer(200, {"Content-Type": mt.OCI_MANIFEST}, b" " * (4 * 1024 * 1024 + 1)), "limit"),
        (
            Answer(
                200, {"Content-Type": mt.OCI_MANIFEST, "Content-Length": str(5 * 1024 * 1024)}, b""
            ),
            "over the 4194304-byte limit",
        ),
    ],
)
def test_bad_documents_are_refused(answer: Answer, message: str) -> None:
    with canned_server({"/v2/": Answer(200, {}, b"{}"), "/v2/x/manifests/1": answer}) as host:

        async def go(registries: Registries) -> None:
            with pytest.raises(DocumentError, match=message):
                await registries.client(host).get_manifest("x", "1")

        run(go)


def test_a_manifest_not_matching_its_digest_is_fetched_again_then_refused() -> None:
    announced = "sha256:" + "2" * 64
    answer = Answer(
        200, {"Content-Type": mt.OCI_MANIFEST, "Docker-Content-Digest": announced}, MANIFEST
    )
    seen: list[Received] = []
    with canned_server({"/v2/x/manifests/1": answer}, seen) as host:

        async def go() -> None:
            async with Registries(
                env={"DOCKER_CONFIG": "/nonexistent"}, retry=RetryPolicy(1, base=0.01)
            ) as registries:
                await registries.client(host).get_manifest("x", "1")

        with pytest.raises(RegistryError) as caught:
            asyncio.run(go())
    assert str(caught.value) == (
        f"registry {host}: GET /v2/x/manifests/1: body of {len(MANIFEST)} bytes does not match "
        f"its digest {announced}, 2 tries"
    )
    assert [r.path for r in seen if r.method == "GET"] == ["/v2/x/manifests/1"] * 2


def test_head_without_digest_falls_back_to_the_bytes() -> None:
    routes = {"/v2/x/manifests/1": Answer(200, {"Content-Type": mt.OCI_MANIFEST}, MANIFEST)}
    with canned_server(routes) as host:

        async def go(registries: Registries) -> Any:
            return await registries.client(host).head_manifest("x", "1")

        head = run(go)
    assert head.digest == Digest.of(MANIFEST) and head.size == len(MANIFEST)


def test_a_body_cut_short_is_a_registry_error() -> None:
    data = b"x" * 1000
    digest = Digest.of(data)
    routes = {f"/v2/x/blobs/{digest}": Answer(200, {"Content-Length": "1000"}, data[:10])}
    with canned_server(routes) as host:

        async def go(registries: Registries) -> None:
            async with registries.client(host).open_blob("x", digest, 1000) as stream:
                async for _ in stream:
                    pass

        with pytest.raises(RegistryError, match="while reading the body"):
            run(go)
