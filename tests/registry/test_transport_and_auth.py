from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from reconciler.errors import AuthError
from reconciler.store.registry.auth import load_credentials, parse_challenge
from reconciler.store.registry.transport import RegistryOptions, is_loopback, policy_for


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.9.9.9", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("registry.example.com", False),
        ("10.0.0.1:5000", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "options", "scheme"),
    [
        ("127.0.0.1:5000", None, "http"),
        ("127.0.0.1:5000", RegistryOptions(insecure=False), "https"),
        ("127.0.0.1:5000", RegistryOptions(ca_file=Path("/ca.pem")), "https"),
        ("r.example.com", None, "https"),
        ("r.example.com", RegistryOptions(insecure=True), "http"),
    ],
)
def test_policy(host: str, options: RegistryOptions | None, scheme: str) -> None:
    assert policy_for(host, options).scheme == scheme


def test_docker_hub_api_host() -> None:
    assert policy_for("docker.io").base_url == "https://registry-1.docker.io"


def write_config(path: Path, auths: dict[str, object]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"auths": auths}))
    return path


def test_credentials_by_exact_host(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "d",
        {
            "r.io": {"auth": base64.b64encode(b"u:p:with:colons").decode()},
            "https://index.docker.io/v1/": {"username": "hub", "password": "pw"},
        },
    )
    env = {"DOCKER_CONFIG": str(config)}
    creds = load_credentials("r.io", env)
    assert creds is not None and (creds.username, creds.password) == ("u", "p:with:colons")
    assert "p:with" not in repr(creds)
    assert load_credentials("r.io:5000", env) is None
    assert load_credentials("other.io", env) is None
    hub = load_credentials("docker.io", env)
    assert hub is not None and hub.username == "hub"


def test_registry_auth_file_comes_first(tmp_path: Path) -> None:
    first = write_config(tmp_path / "a", {"r.io": {"username": "first", "password": "1"}})
    second = write_config(tmp_path / "b", {"r.io": {"username": "second", "password": "2"}})
    env = {"REGISTRY_AUTH_FILE": str(first / "config.json"), "DOCKER_CONFIG": str(second)}
    creds = load_credentials("r.io", env)
    assert creds is not None and creds.username == "first"


def test_broken_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(AuthError, match="cannot read docker config"):
        load_credentials("r.io", {"DOCKER_CONFIG": str(tmp_path)})
    write_config(tmp_path, {"r.io": {"auth": "bm9jb2xvbg=="}})  # "nocolon"
    with pytest.raises(AuthError, match="not base64 'user:password'"):
        load_credentials("r.io", {"DOCKER_CONFIG": str(tmp_path)})


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        (
            'Bearer realm="https://auth.io/token",service="reg",scope="repository:a/b:pull"',
            "bearer",
            {"realm": "https://auth.io/token", "service": "reg", "scope": "repository:a/b:pull"},
        ),
        ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
        (
            'Bearer realm="x", error="insufficient_scope"',
            "bearer",
            {"realm": "x", "error": "insufficient_scope"},
        ),
        ("Basic realm=plain", "basic", {"realm": "plain"}),
        ("", "", {}),
    ],
)
def test_parse_challenge(header: str, scheme: str, params: dict[str, str]) -> None:
    assert parse_challenge(header) == (scheme, params)


def _helper(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def test_lookup_order_helpers_auths_store(tmp_path: Path) -> None:
    bins = tmp_path / "bin"
    _helper(
        bins, "per-host", 'read s; echo "{\\"Username\\":\\"helper-$s\\",\\"Secret\\":\\"x\\"}"\n'
    )
    _helper(
        bins, "store", 'read s; echo "{\\"Username\\":\\"<token>\\",\\"Secret\\":\\"id-$s\\"}"\n'
    )
    config = tmp_path / "d"
    config.mkdir()
    (config / "config.json").write_text(
        json.dumps(
            {
                "credHelpers": {"a.io": "per-host"},
                "auths": {
                    "a.io": {"username": "file", "password": "p"},
                    "https://b.io/v1/": {"username": "b", "password": "p"},
                },
                "credsStore": "store",
            }
        )
    )
    env = {"DOCKER_CONFIG": str(config), "PATH": f"{bins}:/usr/bin:/bin"}
    a = load_credentials("a.io", env)
    assert a is not None and a.username == "helper-a.io"  # credHelpers beat auths
    b = load_credentials("b.io", env)
    assert b is not None and b.username == "b"  # a URL key matches its host
    c = load_credentials("c.io", env)
    assert c is not None and c.identity_token == "id-c.io" and not c.username  # the store
    hub = load_credentials("docker.io", env)
    assert hub is not None and hub.identity_token == "id-https://index.docker.io/v1/"


def test_helper_failures_are_clear(tmp_path: Path) -> None:
    bins = tmp_path / "bin"
    _helper(bins, "missing", "echo 'credentials not found in native keychain'; exit 1\n")
    _helper(bins, "broken", "echo 'keychain locked' >&2; exit 3\n")
    _helper(bins, "garbage", "echo 'not json'\n")
    config = tmp_path / "d"
    config.mkdir()
    env = {"DOCKER_CONFIG": str(config), "PATH": f"{bins}:/usr/bin:/bin"}
    for helper, outcome in (
        ("missing", None),
        ("broken", "failed \\(exit 3\\): keychain locked"),
        ("garbage", "no Username/Secret JSON"),
        ("absent", "docker-credential-absent is not on PATH"),
    ):
        (config / "config.json").write_text(json.dumps({"credHelpers": {"r.io": helper}}))
        if outcome is None:
            assert load_credentials("r.io", env) is None
        else:
            with pytest.raises(AuthError, match=outcome):
                load_credentials("r.io", env)


def test_credentials_go_to_a_plain_http_realm_only_from_a_plain_http_registry() -> None:
    """docs/reliability.md, "Registries you do not control": the registry's own scheme decides,
    unless the realm's host is configured by name."""
    from reconciler.store.registry.http import HttpTransport

    transport = HttpTransport(
        {
            "open.example.com": RegistryOptions(insecure=True),
            "tls.example.com": RegistryOptions(insecure=False),
        }
    )
    ok = transport._plain_realm_ok
    assert ok("127.0.0.1:5000", "127.0.0.1:5001")  # a plain-HTTP loopback registry
    assert ok("registry.lan:5000", "127.0.0.1:9") is False  # TLS registry, loopback realm
    assert ok("registry.lan:5000", "evil.example.com") is False
    assert ok("registry.lan:5000", "open.example.com")  # that realm host is insecure by name
    assert ok("127.0.0.1:5000", "tls.example.com") is False  # HTTPS-only by name
