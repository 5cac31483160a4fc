"""A host that refuses the very first connection: a one-shot command gives up after one quick
retry; a host that answered before, and the daemon's policy, get the usual retries."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from reconciler.errors import RegistryError
from reconciler.settings import load_settings
from reconciler.store.registry.http import HttpTransport
from reconciler.store.registry.retry import RetryPolicy
from tests.support.server import Answer, canned_server

ONE_SHOT = RetryPolicy(attempts=3, base=0.001, cap=0.01, first_contact_retries=1)
DAEMON = RetryPolicy(attempts=3, base=0.001, cap=0.01)


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def refused_tries(policy: RetryPolicy, answered_before: bool) -> tuple[int, RegistryError]:
    """How many connections a request to a refusing host tried, and the error it ended with."""
    statuses: list[int] = []
    transport = HttpTransport(retry=policy, on_response=lambda _h, _m, s: statuses.append(s))
    try:
        if answered_before:
            with canned_server({"/v2/": Answer(200)}) as host:
                response = await transport.request(None, "GET", httpx.URL(f"http://{host}/v2/"))
                assert response.status_code == 200
        else:
            host = closed_port()
        with pytest.raises(RegistryError) as caught:
            await transport.request(None, "GET", httpx.URL(f"http://{host}/v2/"))
    finally:
        await transport.aclose()
    return statuses.count(0), caught.value


@pytest.mark.parametrize(
    ("policy", "answered_before", "tries", "first_contact"),
    [
        (ONE_SHOT, False, 2, True),  # the first try and one quick retry
        (ONE_SHOT, True, 4, False),  # it answered before: maybe restarting, usual retries
        (DAEMON, False, 4, True),  # the daemon keeps trying: a registry may be coming up
    ],
)
def test_refusals_are_retried_by_what_the_host_did_before(
    policy: RetryPolicy, answered_before: bool, tries: int, first_contact: bool
) -> None:
    count, error = asyncio.run(refused_tries(policy, answered_before))
    assert count == tries
    assert error.first_contact_refused is first_contact and error.status == 0
    assert "refused the connection" in str(error) and isinstance(error.__cause__, httpx.HTTPError)


def test_first_contact_delay_and_give_up() -> None:
    assert ONE_SHOT.delay(0, first_contact=True) == 0.2
    assert ONE_SHOT.delay(1, first_contact=True) is None
    assert DAEMON.delay(1, first_contact=True) is not None  # like any transport failure
    assert ONE_SHOT.delay(1) is not None  # every other failure: the usual policy


def test_only_the_cli_policy_gives_up_early() -> None:
    settings = load_settings(retries=5)
    assert settings.retry_policy().first_contact_retries is None
    assert settings.retry_policy(one_shot=True).first_contact_retries == 1
    assert load_settings(retries=0).retry_policy(one_shot=True).first_contact_retries == 0
