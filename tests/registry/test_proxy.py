"""The proxy the environment names (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) carries a
registry's requests, as it does for skopeo and crane; a loopback registry is reached directly."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from reconciler.store.registry.http import HttpTransport, _proxy_for
from tests.support.server import Answer, Received, canned_server

PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def get(url: str) -> httpx.Response:
    transport = HttpTransport()
    try:
        return await transport.request(None, "GET", httpx.URL(url))
    finally:
        await transport.aclose()


def test_a_remote_registry_is_reached_through_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Received] = []
    target = "http://registry.example:5000/v2/"
    with canned_server({target: Answer(200, {}, b"{}")}, seen) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://{proxy}")
        response = asyncio.run(get(target))
    assert response.status_code == 200 and response.content == b"{}"
    # The proxy was asked for the absolute URL, with the registry's name as Host.
    assert [(r.method, r.path) for r in seen] == [("GET", target)]
    assert seen[0].headers["Host"] == "registry.example:5000"


def test_a_loopback_registry_is_never_proxied(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    seen: list[Received] = []
    with canned_server({"/v2/": Answer(200, {}, b"{}")}, seen) as registry:
        monkeypatch.setenv("HTTP_PROXY", dead_proxy)
        monkeypatch.setenv("ALL_PROXY", dead_proxy)
        response = asyncio.run(get(f"http://{registry}/v2/"))
    assert response.status_code == 200 and [r.path for r in seen] == ["/v2/"]


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        ({"HTTPS_PROXY": "proxy.corp:3128"}, "https://r.example/v2/", "http://proxy.corp:3128"),
        ({"HTTPS_PROXY": "http://p:1"}, "http://r.example/v2/", None),  # scheme by scheme
        ({"ALL_PROXY": "http://p:1"}, "http://r.example/v2/", "http://p:1"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "r.example"}, "http://r.example/v2/", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": ".example"}, "http://r.example:5000/", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "other"}, "http://r.example/", "http://p:1"),
        ({"HTTP_PROXY": "http://p:1"}, "http://localhost:5000/v2/", None),
        ({"HTTP_PROXY": "http://p:1"}, "http://[::1]:5000/v2/", None),
    ],
)
def test_which_proxy_a_url_takes(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, expected: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _proxy_for(httpx.URL(url)) == expected
