"""The retry policy and the token scopes, as pure functions."""

from __future__ import annotations

import asyncio
from email.utils import formatdate

import httpx
import pytest

from reconciler.errors import AuthError, NotFoundError, RegistryError, VerificationError
from reconciler.store.registry.auth import parse_scopes, scope_params, scopes_for
from reconciler.store.registry.retry import RetryPolicy, parse_retry_after


def test_retry_after_forms() -> None:
    assert parse_retry_after("120") == 120.0
    now = 1_800_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_backoff_is_capped_jittered_and_bounded() -> None:
    policy = RetryPolicy(attempts=3, base=1.0, cap=4.0)
    for retry, ceiling in ((0, 1.0), (1, 2.0), (2, 4.0)):
        waits = [policy.delay(retry) for _ in range(200)]
        assert all(w is not None and 0 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 100  # jitter spreads clients apart
    assert policy.delay(3) is None  # attempts spent
    assert policy.delay(0, retry_after=3.5) == 3.5  # the registry's wait wins
    assert policy.delay(0, retry_after=60) is None  # ...unless it is over the cap


def test_what_is_retryable() -> None:
    assert RegistryError("reset").retryable  # transport failure (status 0)
    for status in (408, 429, 500, 502, 503, 504):
        assert RegistryError("x", status=status).retryable
    for status in (400, 401, 403, 404, 405, 409, 416):
        assert not RegistryError("x", status=status).retryable
    assert not AuthError("no credentials").retryable
    assert not NotFoundError("gone").retryable
    assert VerificationError("digest mismatch", retryable=True).retryable
    assert not VerificationError("bad gzip").retryable


def test_policy_run_retries_only_retryable_errors() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RegistryError("503", status=503)
        return "ok"

    async def refused() -> str:
        calls.append(1)
        raise RegistryError("400", status=400)

    policy = RetryPolicy(attempts=5, base=0.001, cap=0.01)
    assert asyncio.run(policy.run(flaky, "flaky")) == "ok"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(RegistryError):
        asyncio.run(policy.run(refused, "refused"))
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("method", "url", "scopes"),
    [
        ("HEAD", "https://r.io/v2/team/app/manifests/1", ["repository:team/app:pull"]),
        ("GET", "https://r.io/v2/a/b/c/blobs/sha256:00", ["repository:a/b/c:pull"]),
        ("PUT", "https://r.io/v2/team/app/manifests/1", ["repository:team/app:pull,push"]),
        (
            "POST",
            "https://r.io/v2/team/app/blobs/uploads/?mount=sha256:00&from=base/img",
            ["repository:base/img:pull", "repository:team/app:pull,push"],
        ),
        ("PATCH", "https://r.io/v2/x/blobs/uploads/uuid", ["repository:x:pull,push"]),
        ("DELETE", "https://r.io/v2/x/manifests/sha256:00", ["repository:x:delete"]),
        ("GET", "https://r.io/v2/", []),
        # A repository may be named like an API word: the last marker decides.
        ("GET", "https://r.io/v2/blobs/manifests/1", ["repository:blobs:pull"]),
    ],
)
def test_scopes_for_requests(method: str, url: str, scopes: list[str]) -> None:
    assert scope_params(scopes_for(method, httpx.URL(url))) == scopes


def test_challenge_scopes_merge() -> None:
    merged = parse_scopes("repository:a:pull,push repository:b:pull") | parse_scopes(
        "repository:a:pull"
    )
    assert scope_params(merged) == ["repository:a:pull,push", "repository:b:pull"]
