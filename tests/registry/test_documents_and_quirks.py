"""Small documents fetched again, and registry quirks worked through (issue 21, points 4 and 6).

A fault proxy (tests/support/faultproxy.py) stands in front of each of the session's two real
registries; `reconciler diff` and `apply` run through both as users run them:
- a manifest or an image config whose body is cut short (before its Content-Length) or whose
  bytes do not match their digest is fetched again within the `retries` setting, then fails with
  an error naming the registry, the request path and what happened; so is a token answer cut
  short (a small server of its own here, since the session's registries ask for no token);
- a HEAD whose Content-Length is not the GET's (Harbor's manifests), is 0, or is missing (some
  proxies) changes nothing: the digest is the authority, and a size comes from verified bytes.
Results are checked with skopeo and by walking the target registry directly.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reconciler.errors import RegistryError
from reconciler.oci.digest import Digest
from reconciler.store.registry.client import Registries
from reconciler.store.registry.retry import RetryPolicy
from tests.conftest import Cli, CliResult, World
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import sha256
from tests.support.walk import walk


@dataclass
class Rig:
    world: World
    a: FaultProxy  # in front of world.a: the base (base/single:1)
    b: FaultProxy  # in front of world.b: the added layer (vendor/runtime) and the targets

    @property
    def config(self) -> str:
        return sha256(self.world.single.images[0].config)

    def count(self, proxy: FaultProxy, method: str, pattern: str) -> int:
        return sum(1 for s in proxy.seen if s.method == method and re.search(pattern, s.path))


@pytest.fixture(scope="module")
def proxies(world: World) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    a, b = FaultProxy(world.a.host), FaultProxy(world.b.host)
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def rig(world: World, proxies: tuple[FaultProxy, FaultProxy]) -> Iterator[Rig]:
    for proxy in proxies:
        proxy.clear()
        proxy.seen.clear()
    yield Rig(world, *proxies)
    for proxy in proxies:
        proxy.clear()


def write_case(cli: Cli, rig: Rig, case: str) -> str:
    """A spec over the base behind proxy a, adding a layer and writing a tag behind proxy b;
    returns its target repository."""
    repo = f"quirks/{case}"
    cli.write_spec(
        f"{case}.yaml",
        f"""
        base: {rig.a.host}/base/single:1
        layers:
          - ref: {rig.b.host}/vendor/runtime@{rig.world.vendor_layer.digest}
        annotations: {{case: {case}}}
        targets: [{rig.b.host}/{repo}:1]
        """,
        spec_name=case,
    )
    return repo


def retries(n: int) -> dict[str, str]:
    return {"RECONCILER_RETRIES": str(n)}


def assert_clean(result: CliResult) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert "internal error" not in output.lower(), output


def assert_applied(rig: Rig, repo: str, desired: str) -> None:
    """The tag names the desired manifest (skopeo reads it), and every blob it names is there
    with the size and digest its descriptor says (walked on the registry itself)."""
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{rig.world.b.host}/{repo}:1",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert sha256(raw) == desired
    assert [d["size"] for d in json.loads(raw)["layers"]][-1] == rig.world.vendor_layer.size
    result = walk(rig.world.b.host, repo, "1")
    assert result.tag_present and result.problems == [], result.problems
    assert result.blobs == 3  # the config, the base's layer, the added one


# Point 4: a document cut short or corrupted once, then answered right.

MANIFEST = r"/base/single/manifests/sha256:"


def once_bad(rig: Rig, what: str, kind: str, times: int = 1) -> Fault:
    path = MANIFEST if what == "manifest" else rf"/blobs/{rig.config}$"
    return rig.a.add(Fault("GET", path, kind, after=40 if kind == "truncate" else 30, times=times))


DOCUMENT_FAULTS = [
    ("manifest", "truncate"),
    ("manifest", "flip"),
    ("config", "truncate"),
    ("config", "flip"),
]
IDS = [
    f"{what}-{'cut-short' if kind == 'truncate' else 'flipped'}" for what, kind in DOCUMENT_FAULTS
]


@pytest.mark.parametrize(("what", "kind"), DOCUMENT_FAULTS, ids=IDS)
def test_bad_document_once_is_fetched_again(rig: Rig, cli: Cli, what: str, kind: str) -> None:
    repo = write_case(cli, rig, f"{what}-{kind}-once")
    fault = once_bad(rig, what, kind)
    result = cli("apply", "-o", "json", env_extra=retries(1))
    assert result.code == 0, result.stdout + result.stderr
    assert_clean(result)
    assert fault.fired == 1
    path = MANIFEST if what == "manifest" else rf"/blobs/{rig.config}$"
    assert rig.count(rig.a, "GET", path) == 2  # the bad answer and the good one
    desired = result.json()["specs"][0]["desired"]  # type: ignore[index]
    assert isinstance(desired, str)
    assert_applied(rig, repo, desired)


@pytest.mark.parametrize(("what", "kind"), DOCUMENT_FAULTS, ids=IDS)
@pytest.mark.parametrize("times", [1, -1], ids=["retries-0", "always-bad"])
def test_bad_document_fails_naming_the_registry(
    rig: Rig, cli: Cli, what: str, kind: str, times: int
) -> None:
    case = f"{what}-{kind}-{'retries-0' if times == 1 else 'always'}"
    repo = write_case(cli, rig, case)
    fault = once_bad(rig, what, kind, times=times)
    allowed = 0 if times == 1 else 1
    result = cli("apply", env_extra=retries(allowed))
    assert result.code == 1, result.stdout + result.stderr
    assert_clean(result)
    tries = allowed + 1
    assert fault.fired == tries
    path = (
        "/v2/base/single/manifests/sha256:"
        if what == "manifest"
        else f"/v2/base/single/blobs/{rig.config}"
    )
    message = next(line for line in result.stdout.splitlines() if f"registry {rig.a.host}" in line)
    assert path in message, message
    happened = "body not read whole" if kind == "truncate" else "does not match its digest"
    assert happened in message, message
    assert f"{tries} {'try' if tries == 1 else 'tries'}" in message, message
    assert case in result.stdout  # the spec is named
    assert not walk(rig.world.b.host, repo, "1").tag_present


# Point 6: HEAD answers whose Content-Length is not the GET's, is 0, or is missing.

QUIRKS = {
    # Harbor: a manifest HEAD's Content-Length is not its GET's.
    "manifest-head-other-length": ("/manifests/", "set_header", {"Content-Length": "4321"}),
    # Some proxies: a HEAD answered with Content-Length 0, or none.
    "manifest-head-length-0": ("/manifests/", "set_header", {"Content-Length": "0"}),
    "manifest-head-no-length": ("/manifests/", "drop_header", {"Content-Length": ""}),
    "blob-head-length-0": ("/blobs/sha256:", "set_header", {"Content-Length": "0"}),
    "blob-head-no-length": ("/blobs/sha256:", "drop_header", {"Content-Length": ""}),
}


def quirk_round(rig: Rig, cli: Cli, repo: str) -> str:
    """diff (out of sync), apply, diff (in sync); returns the digest applied."""
    diff = cli("diff", "-o", "json")
    assert diff.code == 2, diff.stdout + diff.stderr  # out of sync, not failed
    assert_clean(diff)
    spec = diff.json()["specs"][0]  # type: ignore[index]
    assert spec["state"] == "OutOfSync", spec  # type: ignore[index]
    desired = spec["desired"]  # type: ignore[index]
    assert isinstance(desired, str)

    applied = cli("apply", "-o", "json")
    assert applied.code == 0, applied.stdout + applied.stderr
    assert_clean(applied)
    assert applied.json()["specs"][0]["desired"] == desired  # type: ignore[index]
    assert_applied(rig, repo, desired)

    again = cli("diff", "-o", "json")
    assert again.code == 0, again.stdout + again.stderr  # in sync: the HEADs are believed
    return desired


@pytest.mark.parametrize("case", list(QUIRKS))
def test_head_quirks_are_worked_through(rig: Rig, cli: Cli, case: str) -> None:
    path, kind, headers = QUIRKS[case]
    repo = write_case(cli, rig, case)
    faults = [p.add(Fault("HEAD", path, kind, headers=headers, times=-1)) for p in (rig.a, rig.b)]
    first = quirk_round(rig, cli, repo)
    # Another image into the same repository: now the target holds its blobs, and HEADs on
    # them answer 200 with the quirk.
    (cli.specs / f"{case}.yaml").write_text(
        (cli.specs / f"{case}.yaml").read_text().replace(f"case: {case}", f"case: {case}-again")
    )
    assert quirk_round(rig, cli, repo) != first
    # The base's HEADs go to a (its tag), the targets' to b (tags and blobs).
    assert faults[1].fired >= 1 and (case.startswith("blob-") or faults[0].fired >= 1)
    ranged = [s for s in rig.b.seen if s.method == "GET" and "Range" in s.headers]
    if case.startswith("blob-"):
        # One ranged GET (one byte) per blob whose HEAD said 200 without its size: the added
        # layer in the first diff (resolve needs its size), then the two layers the target
        # holds the second time, in its diff and again in its apply (one run, one answer).
        assert [s.headers["Range"] for s in ranged] == ["bytes=0-0"] * 5, [s.path for s in ranged]
    else:
        assert ranged == []


@contextmanager
def rangeless_server(blobs: dict[str, bytes], seen: list[tuple[str, str | None]]) -> Iterator[str]:
    """A registry that answers a blob HEAD without Content-Length, and every GET in full (no
    ranges, as a server may): `seen` gets (method, Range header) of each request."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:
            seen.append(("HEAD", self.headers.get("Range")))
            found = self.path.rsplit("/", 1)[1] in blobs
            self.send_response_only(200 if found else 404)
            self.end_headers()  # no Content-Length, whatever the blob

        def do_GET(self) -> None:
            seen.append(("GET", self.headers.get("Range")))
            body = blobs[self.path.rsplit("/", 1)[1]]
            self.send_response_only(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_blob_size_without_ranges_comes_from_the_verified_body() -> None:
    blob, empty = b"x" * 70_000, b""
    seen: list[tuple[str, str | None]] = []
    with rangeless_server({sha256(blob): blob, sha256(empty): empty}, seen) as host:

        async def go() -> tuple[int | None, int | None]:
            async with Registries(env={"DOCKER_CONFIG": "/nonexistent"}) as registries:
                client = registries.client(host)
                sizes = (
                    await client.head_blob("x", Digest.parse(sha256(blob))),
                    await client.head_blob("x", Digest.parse(sha256(empty))),
                )
                return sizes

        assert asyncio.run(go()) == (len(blob), 0)
    # The ranged GET answered in full: counted and verified, not asked again. The empty blob
    # had no Content-Length either: its size is asked too (only a HEAD's 0 is believed for it).
    assert seen == [("HEAD", None), ("GET", "bytes=0-0"), ("HEAD", None), ("GET", "bytes=0-0")]


@contextmanager
def token_registry(bad_tokens: int, seen: list[str]) -> Iterator[str]:
    """A registry asking for a bearer token, whose token server (on the same host) cuts its
    first `bad_tokens` answers short: 10 of the 100 bytes its Content-Length says."""
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + "1" * 64,
                "size": 2,
            },
            "layers": [],
        }
    ).encode()
    state = {"tokens": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path.split("?", 1)[0])
            host = self.headers["Host"]
            if self.path.startswith("/token"):
                state["tokens"] += 1
                body = b'{"token": "good", "expires_in": 300}'
                self.send_response_only(200)
                self.send_header("Content-Type", "application/json")
                if state["tokens"] <= bad_tokens:
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    self.wfile.write(body[:10])
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.headers.get("Authorization") != "Bearer good":
                self.send_response_only(401)
                challenge = f'Bearer realm="http://{host}/token",service="test"'
                self.send_header("WWW-Authenticate", challenge)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_response_only(200)
                self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                self.send_header("Docker-Content-Digest", sha256(manifest))
                self.send_header("Content-Length", str(len(manifest)))
                self.end_headers()
                self.wfile.write(manifest)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def get_manifest_with_retries(host: str, retries: int) -> None:
    async def go() -> None:
        async with Registries(
            env={"DOCKER_CONFIG": "/nonexistent"}, retry=RetryPolicy(retries, base=0.01)
        ) as registries:
            await registries.client(host).get_manifest("x", "1")

    asyncio.run(go())


def test_a_token_answer_cut_short_is_fetched_again() -> None:
    seen: list[str] = []
    with token_registry(1, seen) as host:
        get_manifest_with_retries(host, 1)
    # The registry's 401, the token cut short; the request again, its token asked up front.
    assert seen == ["/v2/x/manifests/1", "/token", "/token", "/v2/x/manifests/1"]


@pytest.mark.parametrize("retries", [0, 1])
def test_a_token_answer_always_cut_short_fails_naming_the_registry(retries: int) -> None:
    seen: list[str] = []
    with token_registry(100, seen) as host, pytest.raises(RegistryError) as caught:
        get_manifest_with_retries(host, retries)
    assert seen.count("/token") == retries + 1
    message = str(caught.value)
    assert message.startswith(f"registry {host}: GET /token: token answer cut short ("), message
