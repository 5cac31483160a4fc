"""Authentication and TLS against real registries: htpasswd over TLS with a test CA, and token
auth with a token server that signs JWTs. Also: redirects never carry credentials elsewhere, and
no secret ever reaches the output."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.errors import AuthError, RegistryError
from reconciler.store.registry.client import Registries
from reconciler.store.registry.retry import RetryPolicy
from reconciler.store.registry.transport import RegistryOptions
from tests.conftest import Cli
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import (
    Image,
    Layer,
    make_layer,
    push_blob_only,
    push_layout,
    write_layout,
)
from tests.support.pki import Pki, make_pki
from tests.support.registry import Registry, start_registry
from tests.support.report import record
from tests.support.server import Answer, Received, canned_server
from tests.support.tokenserver import TokenServer
from tests.support.walk import walk

USER, PASSWORD = "alice", "s3cret-Pa55-never-printed"


@dataclass
class Seeded:
    registry: Registry
    layer: Layer  # in vendor/layer; base/app:1 is a one-platform image


def seed(root: Path, registry: Registry, *, creds: str, cert_dir: Path | None = None) -> Seeded:
    base = Image("linux", "amd64", [make_layer({"bin/x": os.urandom(20_000)})])
    layout = write_layout(root / "base", [base], index=False)
    push_layout(layout, f"{registry.host}/base/app:1", creds=creds, cert_dir=cert_dir)
    layer = make_layer({"opt/extra": os.urandom(30_000)})
    push_blob_only(
        root / "layer", registry.host, "vendor/layer", layer, creds=creds, cert_dir=cert_dir
    )
    return Seeded(registry, layer)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_registry(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    root = tmp_path_factory.mktemp("tls")
    hashed = os.popen(f"htpasswd -Bbn {USER} {PASSWORD}").read()  # noqa: S605 - test input
    (root / "htpasswd").write_text(hashed)
    registry = start_registry(
        f"  tls:\n    certificate: {pki.cert_file}\n    key: {pki.key_file}\n"
        f"auth:\n  htpasswd:\n    realm: test\n    path: {root / 'htpasswd'}\n"
    )
    yield seed(root, registry, creds=f"{USER}:{PASSWORD}", cert_dir=pki.ca_file.parent / "certs")
    registry.stop()


@pytest.fixture(scope="module")
def token_server(pki: Pki) -> Iterator[TokenServer]:
    server = TokenServer(pki, users={USER: PASSWORD}, refresh_tokens={"refresh-0a1b": USER})
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def token_registry(
    token_server: TokenServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Seeded]:
    registry = start_registry(token_server.registry_config())
    yield seed(tmp_path_factory.mktemp("token"), registry, creds=f"{USER}:{PASSWORD}")
    registry.stop()


def docker_config(cli: Cli, host: str, entry: dict[str, str]) -> None:
    (cli.docker_config / "config.json").write_text(json.dumps({"auths": {host: entry}}))


def basic_entry() -> dict[str, str]:
    return {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


def write_app(cli: Cli, seeded: Seeded, repo: str) -> None:
    host = seeded.registry.host
    cli.write_spec(
        "app.yaml",
        f"""
        base: {host}/base/app:1
        layers:
          - ref: {host}/vendor/layer@{seeded.layer.digest}
        targets: [{host}/{repo}:1]
        """,
        spec_name="app",
    )


def settings_file(cli: Cli, registries: dict[str, dict[str, object]]) -> list[str]:
    path = cli.root / "settings.yaml"
    path.write_text(json.dumps({"registries": registries}))
    return ["--config", str(path)]


def assert_no_secret(*outputs: str) -> None:
    for text in outputs:
        assert PASSWORD not in text
        assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in text
        assert "refresh-0a1b" not in text
        assert "eyJ" not in text  # no JWT (their header always starts so)


def test_tls_with_ca_file_and_basic_auth(tls_registry: Seeded, pki: Pki, cli: Cli) -> None:
    host = tls_registry.registry.host
    docker_config(cli, host, basic_entry())
    write_app(cli, tls_registry, "team/tls")
    args = settings_file(cli, {host: {"ca_file": str(pki.ca_file)}})
    mark = tls_registry.registry.mark()
    result = cli("apply", *args)
    assert result.code == 0, result.stdout + result.stderr
    basic = {"Authorization": "Basic " + basic_entry()["auth"]}
    found = walk(host, "team/tls", "1", scheme="https", verify=str(pki.ca_file), headers=basic)
    assert found.tag_present and found.problems == [] and found.blobs == 3
    requests = tls_registry.registry.requests(mark)
    assert any(r.method == "POST" and "mount=" in r.path and r.status == 201 for r in requests)
    again = cli("diff", *args, env_extra={"RECONCILER_LOG_LEVEL": "debug"})
    assert again.code == 0
    assert_no_secret(result.stdout, result.stderr, again.stdout, again.stderr)
    record("auth", case="htpasswd over TLS (test CA via ca_file)", outcome="pull, mount, push")


def test_tls_never_falls_back_to_http(tls_registry: Seeded, cli: Cli) -> None:
    host = tls_registry.registry.host
    docker_config(cli, host, basic_entry())
    write_app(cli, tls_registry, "team/nofallback")
    args = settings_file(cli, {host: {"insecure": False}})  # HTTPS, system CAs only
    mark = tls_registry.registry.mark()
    result = cli("apply", *args)
    assert result.code == 1
    assert "CERTIFICATE_VERIFY_FAILED" in result.stdout
    # Nothing reached the registry as an HTTP request: TLS failed, and no plain retry followed.
    assert tls_registry.registry.requests(mark) == []
    record("auth", case="HTTPS with an unknown CA", outcome="clear error, no plain-HTTP retry")


def test_wrong_password_is_a_clear_error(tls_registry: Seeded, pki: Pki, cli: Cli) -> None:
    host = tls_registry.registry.host
    wrong = base64.b64encode(f"{USER}:not-{PASSWORD}".encode()).decode()
    docker_config(cli, host, {"auth": wrong})
    write_app(cli, tls_registry, "team/wrong")
    args = settings_file(cli, {host: {"ca_file": str(pki.ca_file)}})
    result = cli("apply", *args, env_extra={"RECONCILER_LOG_LEVEL": "debug"})
    assert result.code == 1
    assert "refused the configured credentials" in result.stdout
    assert f"not-{PASSWORD}" not in result.stdout + result.stderr
    assert wrong not in result.stdout + result.stderr


def test_token_auth_pull_push_and_mount_scopes(
    token_registry: Seeded, token_server: TokenServer, cli: Cli
) -> None:
    host = token_registry.registry.host
    docker_config(cli, host, basic_entry())
    write_app(cli, token_registry, "team/app")
    token_server.requests.clear()
    mark = token_registry.registry.mark()
    result = cli("apply", env_extra={"RECONCILER_LOG_LEVEL": "debug"})
    assert result.code == 0, result.stdout + result.stderr
    asked = [sorted(r.scopes) for r in token_server.requests]
    assert all(r.grant == "basic" and r.user == USER for r in token_server.requests)
    # The mount asked for push on the target and pull on the source, in one token.
    assert ["repository:team/app:pull,push", "repository:vendor/layer:pull"] in asked
    assert ["repository:base/app:pull"] in asked
    # Tokens are cached per scope set: none was asked for twice in one run.
    assert len(asked) == len({tuple(a) for a in asked}), asked
    requests = token_registry.registry.requests(mark)
    assert any(r.method == "POST" and "mount=" in r.path and r.status == 201 for r in requests)
    found = walk(host, "team/app", "1", headers=token_server.pull_header("team/app"))
    assert found.tag_present and found.problems == [] and found.blobs == 3
    assert_no_secret(result.stdout, result.stderr)
    record(
        "auth",
        case="token auth (JWT, RS256), Basic to the realm",
        outcome=f"{len(asked)} tokens for {len(requests)} registry requests; mount with 2 scopes",
    )


def test_identity_token_uses_oauth2_refresh(
    token_registry: Seeded, token_server: TokenServer, cli: Cli
) -> None:
    host = token_registry.registry.host
    docker_config(cli, host, {"identitytoken": "refresh-0a1b"})
    write_app(cli, token_registry, "team/oauth")
    token_server.requests.clear()
    result = cli("apply")
    assert result.code == 0, result.stdout + result.stderr
    assert token_server.requests
    assert all(r.method == "POST" and r.grant == "refresh_token" for r in token_server.requests)
    assert all(r.authorization is None for r in token_server.requests)
    record("auth", case="identitytoken (OAuth2 refresh_token grant)", outcome="pull, mount, push")


def helper_dir(root: Path, name: str, script: str) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    helper = bin_dir / f"docker-credential-{name}"
    helper.write_text("#!/bin/sh\n" + script)
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_credential_helper_and_store(
    token_registry: Seeded, token_server: TokenServer, cli: Cli
) -> None:
    host = token_registry.registry.host
    answer = json.dumps({"ServerURL": host, "Username": USER, "Secret": PASSWORD})
    bin_dir = helper_dir(
        cli.root,
        "testhelper",
        f'read server\n[ "$server" = "{host}" ] || exit 1\necho \'{answer}\'\n',
    )
    helper_dir(cli.root, "emptystore", "echo 'credentials not found in native keychain'\nexit 1\n")
    path = f"{bin_dir}:{os.environ['PATH']}"
    write_app(cli, token_registry, "team/helper")
    config = cli.docker_config / "config.json"
    config.write_text(json.dumps({"credHelpers": {host: "testhelper"}}))
    result = cli("apply", env_extra={"PATH": path})
    assert result.code == 0, result.stdout + result.stderr
    # A store that has nothing for the host: anonymous, and the registry says no, clearly.
    config.write_text(json.dumps({"credsStore": "emptystore"}))
    write_app(cli, token_registry, "team/store")
    result = cli("apply", env_extra={"PATH": path})
    assert result.code == 1
    assert "needs credentials and none are configured" in result.stdout
    record(
        "auth", case="credHelpers / credsStore programs", outcome="used; 'not found' is anonymous"
    )


def test_token_refreshed_once_on_401(token_registry: Seeded, token_server: TokenServer) -> None:
    """A cached token the registry stops accepting is dropped and fetched again, once."""
    host = token_registry.registry.host
    env = {"DOCKER_CONFIG": "/nonexistent", "REGISTRY_AUTH_FILE": ""}

    async def go() -> int:
        async with Registries(env=env) as registries:
            client = registries.client(host)
            token_server.anonymous_pull = True
            token_server.lifetimes = [-57]  # the registry accepts it for about 3 s
            token_server.expires_in = 3600  # ...while the client is told an hour
            try:
                assert await client.head_manifest("base/app", "1") is not None
                await asyncio.sleep(4)
                assert await client.head_manifest("base/app", "1") is not None
            finally:
                token_server.anonymous_pull = False
                token_server.expires_in = 300
            return registries.transport.auth(host).token_fetches

    token_server.requests.clear()
    assert asyncio.run(go()) == 2
    assert [r.scopes for r in token_server.requests] == [["repository:base/app:pull"]] * 2
    record("auth", case="cached token rejected (expired early)", outcome="refetched once, then 200")


def test_no_credentials_to_a_plain_http_realm(
    token_registry: Seeded, token_server: TokenServer, tmp_path: Path
) -> None:
    host = token_registry.registry.host
    realm_host = f"127.0.0.1:{token_server.port}"
    config = tmp_path
    (config / "config.json").write_text(json.dumps({"auths": {host: basic_entry()}}))
    options = {realm_host: RegistryOptions(insecure=False)}  # that host is HTTPS-only

    async def go() -> None:
        async with Registries(options, env={"DOCKER_CONFIG": str(config)}) as registries:
            await registries.client(host).head_manifest("base/app", "1")

    token_server.requests.clear()
    with pytest.raises(AuthError, match="refusing to send credentials to token realm"):
        asyncio.run(go())
    assert token_server.requests == []
    record("auth", case="credentials to a plain-HTTP realm", outcome="refused before sending")


def test_redirected_blob_gets_carry_no_credentials(
    tls_registry: Seeded, tmp_path_factory: pytest.TempPathFactory, cli: Cli
) -> None:
    """Blob GETs answered with 307 to another server: it never sees Authorization."""
    root = tmp_path_factory.mktemp("redirect")
    hashed = os.popen(f"htpasswd -Bbn {USER} {PASSWORD}").read()  # noqa: S605 - test input
    (root / "htpasswd").write_text(hashed)
    source = start_registry(f"auth:\n  htpasswd:\n    realm: test\n    path: {root / 'htpasswd'}\n")
    seeded = seed(root, source, creds=f"{USER}:{PASSWORD}")
    proxy = FaultProxy(source.host)
    dest = start_registry()
    blob = seeded.layer.blob
    seen: list[Received] = []
    try:
        with canned_server({f"/store/{seeded.layer.digest}": Answer(200, {}, blob)}, seen) as store:
            proxy.add(
                Fault(
                    "GET",
                    rf"/vendor/layer/blobs/{seeded.layer.digest}$",
                    "redirect",
                    status=307,
                    times=-1,
                    where=lambda _p: f"http://{store}/store/{seeded.layer.digest}?sig=x",
                )
            )
            docker_config(cli, proxy.host, basic_entry())
            cli.write_spec(
                "copy.yaml",
                f"""
                base: {proxy.host}/base/app:1
                layers: [{{ref: {proxy.host}/vendor/layer@{seeded.layer.digest}}}]
                targets: [{dest.host}/team/redirected:1]
                """,
            )
            result = cli("apply")
        assert result.code == 0, result.stdout + result.stderr
        assert len(seen) >= 2  # diff_id pass and copy both went to the store
        assert all("Authorization" not in r.headers for r in seen)
        assert all(r.path.endswith("?sig=x") for r in seen)
        redirected = [s for s in proxy.seen if s.fault == "redirect"]
        assert redirected and all("Authorization" in s.headers for s in redirected)
        found = walk(dest.host, "team/redirected", "1")
        assert found.tag_present and found.problems == []
        record(
            "faults",
            case="blob GET redirected to another host",
            fault="redirect",
            request="GET /blobs/",
            status=307,
            fired=len(redirected),
            outcome="copied; the other host saw no Authorization",
            exit=result.code,
            seconds=None,
        )
    finally:
        proxy.stop()
        source.stop()
        dest.stop()


def test_https_to_http_redirect_is_refused(pki: Pki) -> None:
    async def go(host: str, target: str) -> None:
        options = {host: RegistryOptions(ca_file=pki.ca_file)}
        async with Registries(options, env={}, retry=RetryPolicy(attempts=0)) as registries:
            await registries.client(host).get_manifest("x/y", "1")

    seen: list[Received] = []
    with canned_server({}, seen) as plain:
        routes = {"/v2/x/y/manifests/1": Answer(302, {"Location": f"http://{plain}/m"})}
        with (
            canned_server(routes, tls=(pki.cert_file, pki.key_file)) as secure,
            pytest.raises(RegistryError, match="refusing a redirect from https to http"),
        ):
            asyncio.run(go(secure, plain))
    assert seen == []  # the plain-HTTP server was never contacted


def _push_raw(host: str, repository: str, tag: str, blobs: list[bytes], manifest: bytes) -> None:
    """Seed with plain HTTP requests (a manifest skopeo would not copy as is)."""
    import hashlib

    import httpx

    with httpx.Client(base_url=f"http://{host}/v2/{repository}", timeout=30) as http:
        for blob in blobs:
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            location = httpx.URL(http.post("/blobs/uploads/").headers["Location"])
            done = http.put(location.copy_merge_params({"digest": digest}), content=blob)
            assert done.status_code == 201, done.text
        put = http.put(
            f"/manifests/{tag}",
            content=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert put.status_code == 201, put.text


def test_foreign_layers_are_never_fetched(cli: Cli) -> None:
    """A non-distributable layer (with `urls`) is referenced, never downloaded or pushed."""
    foreign = make_layer({"Windows/System32/big.dll": os.urandom(10_000)})
    seen: list[Received] = []
    # distribution only stores manifests whose foreign URLs its configuration allows.
    allow = "validation:\n  manifests:\n    urls:\n      allow: ['^https?://']\n"
    source, dest = start_registry(allow), start_registry(allow)
    try:
        with canned_server(
            {f"/layers/{foreign.digest}": Answer(200, {}, foreign.blob)}, seen
        ) as store:
            plain = make_layer({"app/bin": b"app"})
            image = Image("windows", "amd64", [foreign, plain])
            manifest = json.loads(image.manifest)
            manifest["layers"][0]["mediaType"] = (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            )
            manifest["layers"][0]["urls"] = [f"http://{store}/layers/{foreign.digest}"]
            raw = json.dumps(manifest, separators=(",", ":")).encode()
            _push_raw(source.host, "base/foreign", "1", [image.config, plain.blob], raw)
            docker_config(cli, source.host, basic_entry())
            cli.write_spec(
                "foreign.yaml",
                f"""
                base: {source.host}/base/foreign:1
                annotations: {{team: windows}}
                targets: [{dest.host}/team/foreign:1]
                """,
            )
            result = cli("apply")
        assert result.code == 0, result.stdout + result.stderr
        assert seen == []  # the URL of the foreign layer was never contacted
        found = walk(dest.host, "team/foreign", "1")
        # Config and the distributable layer were copied; the foreign one stays where it lives.
        assert found.tag_present and found.problems == [] and found.blobs == 2
        record("auth", case="foreign layer with urls", outcome="referenced, never fetched")
    finally:
        source.stop()
        dest.stop()
