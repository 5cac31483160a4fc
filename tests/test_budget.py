"""Request budgets (store/registry/budget.py): the token bucket and the server's window as
arithmetic, the FIFO queue on a real event loop, RateLimit headers as registries send them, and
`reconciler apply` against a real registry behind a proxy that counts arrivals, says what is
left in RateLimit headers, and refuses what goes over."""

from __future__ import annotations

import asyncio
import collections
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from reconciler.engine import open_stores
from reconciler.errors import RegistryError, SettingsError
from reconciler.logs import current_spec
from reconciler.settings import load_settings
from reconciler.store.registry.budget import (
    Budgets,
    RateLimit,
    ServerWindow,
    TokenBucket,
    parse_ratelimit,
)
from tests.conftest import Cli
from tests.support.faultproxy import Fault, FaultProxy, Quota, Seen
from tests.support.images import Image, make_layer, push_layout, write_layout
from tests.support.registry import Registry, start_registry
from tests.support.walk import walk
from tests.test_daemon import running, wait_for

HOST = "registry.test:5000"

# -- the token bucket and the server's window: arithmetic on a fake clock -----------------


def test_bucket_starts_full_then_refills_at_its_rate() -> None:
    bucket = TokenBucket.full(10.0, 3, now=100.0)
    for _ in range(3):
        assert bucket.wait(100.0) == 0
        bucket.take(100.0)
    assert bucket.wait(100.0) == pytest.approx(0.1)
    assert bucket.wait(100.05) == pytest.approx(0.05)
    assert bucket.wait(100.1) == 0
    bucket.take(100.1)
    assert bucket.wait(100.1) == pytest.approx(0.1)


def test_bucket_saves_at_most_its_burst() -> None:
    bucket = TokenBucket.full(2.0, 4, now=0.0)
    for _ in range(4):
        bucket.take(0.0)
    # An hour idle saves 4 tokens, not 7,200.
    for _ in range(4):
        assert bucket.wait(3600.0) == 0
        bucket.take(3600.0)
    assert bucket.wait(3600.0) == pytest.approx(0.5)


def test_window_spreads_what_is_left_when_low() -> None:
    # 5 of 100 left, reset in 10 s: low (under a tenth), so one request every 10/4 s after this.
    window = ServerWindow(limit=100, remaining=5, reset_at=10.0)
    assert window.wait(0.0, low_water=2) == 0
    window.sent(0.0, low_water=2, cap=30.0)
    assert window.remaining == 4
    assert window.wait(1.0, low_water=2) == pytest.approx(1.5)
    assert window.wait(2.5, low_water=2) == 0
    window.sent(2.5, low_water=2, cap=30.0)
    assert window.wait(2.5, low_water=2) == pytest.approx((10.0 - 2.5) / 3)


def test_window_is_not_low_above_a_tenth_and_the_concurrency() -> None:
    window = ServerWindow(limit=100, remaining=50, reset_at=10.0)
    window.sent(0.0, low_water=8, cap=30.0)
    assert window.wait(0.0, low_water=8) == 0
    # Under the concurrency (what may be in flight at once) is low, whatever the limit says.
    small = ServerWindow(limit=1000, remaining=20, reset_at=10.0)
    small.sent(0.0, low_water=32, cap=30.0)
    assert small.wait(0.0, low_water=32) == pytest.approx(10.0 / 19)


def test_window_at_zero_waits_for_the_reset_and_spreads_only_within_reach() -> None:
    spent = ServerWindow(limit=100, remaining=0, reset_at=7.0)
    assert spent.wait(3.0, low_water=8) == pytest.approx(4.0)
    assert spent.wait(7.0, low_water=8) == 0 and spent.expired(7.0)
    # 2 left for an hour: a spread 30 minutes apart helps nobody (the reset is beyond the
    # 30 s cap either way): the budget is spent at the usual pace, then fails clearly.
    far = ServerWindow(limit=100, remaining=3, reset_at=3600.0)
    far.sent(0.0, low_water=8, cap=30.0)
    assert far.wait(0.0, low_water=8) == 0
    near = ServerWindow(limit=100, remaining=3, reset_at=50.0)
    near.sent(0.0, low_water=8, cap=30.0)
    assert near.wait(0.0, low_water=8) == pytest.approx(25.0)
    # No reset said (no RateLimit-Reset, no window): nothing to spread over; once spent, one
    # request at a time asks (the answers of those in flight will say more).
    unknown = ServerWindow(limit=100, remaining=0, reset_at=None)
    assert unknown.wait(0.0, low_water=8, in_flight=0) == 0
    assert unknown.wait(0.0, low_water=8, in_flight=2) == math.inf
    # Spent by our count while requests are in flight: their answers decide, not the reset.
    assert spent.wait(3.0, low_water=8, in_flight=1) == math.inf


def test_a_window_that_reset_rolls_over_to_the_limit_less_what_is_in_flight() -> None:
    window = ServerWindow(limit=25, remaining=0, reset_at=3.0)
    assert window.expired(3.0)
    rolled = window.rolled(in_flight=5)
    assert (rolled.limit, rolled.remaining, rolled.reset_at) == (25, 20, None)
    for _ in range(20):
        rolled.sent(3.0, low_water=8, cap=30.0)
    assert rolled.wait(3.0, low_water=8, in_flight=25) == math.inf


def test_the_latest_request_sent_speaks_for_the_server() -> None:
    async def main() -> int:
        budgets = Budgets()
        first = await budgets.take(HOST, "GET", "/")
        second = await budgets.take(HOST, "GET", "/")
        third = await budgets.take(HOST, "GET", "/")

        def said(remaining: int) -> httpx.Headers:
            return httpx.Headers(
                {
                    "RateLimit-Limit": "50",
                    "RateLimit-Remaining": str(remaining),
                    "RateLimit-Reset": "9",
                }
            )

        host = budgets.host(HOST)
        # Two still in flight (first and third) may be counted there yet: 28 at most.
        budgets.answered(HOST, second, said(30))
        assert host.window is not None and host.window.remaining == 28
        budgets.answered(HOST, first, said(31))  # answered late: it knows less; ignored
        assert host.window.remaining == 28
        budgets.answered(HOST, third, said(29))  # the latest sent, nothing in flight
        return host.window.remaining

    assert asyncio.run(main()) == 29


# -- RateLimit headers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (  # IETF draft, delta seconds
            {"RateLimit-Limit": "100", "RateLimit-Remaining": "7", "RateLimit-Reset": "30"},
            RateLimit(100, 7, 30.0, None),
        ),
        (  # IETF draft with quota policies: the first item is the one that applies
            {"RateLimit-Limit": "10, 10;w=1, 50;w=60", "RateLimit-Remaining": "3"},
            RateLimit(10, 3, None, 1.0),
        ),
        (  # Docker Hub: window in the items, no reset
            {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600"},
            RateLimit(100, 76, None, 21600.0),
        ),
        (  # more left than the limit: the limit
            {"RateLimit-Limit": "5", "RateLimit-Remaining": "9"},
            RateLimit(5, 5, None, None),
        ),
        (  # a reset that is a point in time (epoch seconds)
            {"RateLimit-Limit": "5", "RateLimit-Remaining": "1", "RateLimit-Reset": "2000000060"},
            RateLimit(5, 1, 60.0, None),
        ),
        (  # a malformed reset alone is dropped; the rest still counts
            {"RateLimit-Limit": "5", "RateLimit-Remaining": "1", "RateLimit-Reset": "soon"},
            RateLimit(5, 1, None, None),
        ),
        ({}, None),
        ({"RateLimit-Limit": "many", "RateLimit-Remaining": "3"}, None),
        ({"RateLimit-Limit": "100", "RateLimit-Remaining": "-1"}, None),
        ({"RateLimit-Limit": "100", "RateLimit-Remaining": "2.5"}, None),
        ({"RateLimit-Limit": "0", "RateLimit-Remaining": "0"}, None),
        ({"RateLimit-Remaining": "3"}, None),
        ({"RateLimit-Limit": "100;w=abc", "RateLimit-Remaining": ";w=60"}, None),
    ],
)
def test_ratelimit_headers(headers: dict[str, str], expected: RateLimit | None) -> None:
    assert parse_ratelimit(httpx.Headers(headers), now=2_000_000_000.0) == expected


# -- the queue, on a real event loop ------------------------------------------------------


def test_queue_is_first_come_first_served() -> None:
    async def main() -> list[int]:
        budgets = Budgets()
        budgets.limit(HOST, 500.0, 1)
        order: list[int] = []

        async def one(i: int) -> None:
            await budgets.take(HOST, "GET", "/")
            order.append(i)

        tasks = []
        for i in range(12):
            tasks.append(asyncio.ensure_future(one(i)))
            await asyncio.sleep(0)  # each one reaches the queue before the next starts
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == list(range(12))


def test_a_cancelled_wait_leaves_the_queue() -> None:
    async def main() -> list[int]:
        budgets = Budgets()
        budgets.limit(HOST, 200.0, 1)
        await budgets.take(HOST, "GET", "/")  # the one token
        order: list[int] = []

        async def one(i: int) -> None:
            await budgets.take(HOST, "GET", "/")
            order.append(i)

        tasks = [asyncio.ensure_future(one(i)) for i in range(4)]
        await asyncio.sleep(0)
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return order

    assert asyncio.run(main()) == [0, 2, 3]


def test_a_host_without_budget_never_waits_nor_shows() -> None:
    async def main() -> tuple[int, dict[str, str]]:
        budgets = Budgets()
        for _ in range(1000):
            ticket = await budgets.take("other.test", "GET", "/")
            budgets.answered("other.test", ticket, httpx.Headers({}))
        return budgets.host("other.test").in_flight, dict(budgets.waiting())

    assert asyncio.run(main()) == (0, {})


def test_spent_server_budget_beyond_the_cap_fails_naming_host_and_wait() -> None:
    async def main() -> None:
        budgets = Budgets(cap=5.0)
        ticket = await budgets.take(HOST, "GET", "/v2/")
        spent = {"RateLimit-Limit": "100", "RateLimit-Remaining": "0", "RateLimit-Reset": "60"}
        budgets.answered(HOST, ticket, httpx.Headers(spent))
        await budgets.take(HOST, "HEAD", "http://registry.test:5000/v2/a/manifests/1")

    with pytest.raises(RegistryError) as caught:
        asyncio.run(main())
    message = str(caught.value)
    assert HOST in message and "resets in 60s" in message and "retry_max_delay (5s)" in message
    assert "HEAD http://registry.test:5000/v2/a/manifests/1" in message
    assert not caught.value.retryable


def test_spent_server_budget_within_the_cap_waits_for_the_reset() -> None:
    async def main() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        budgets = Budgets(cap=5.0)
        ticket = await budgets.take(HOST, "GET", "/v2/")
        spent = {"RateLimit-Limit": "100", "RateLimit-Remaining": "0", "RateLimit-Reset": "1"}
        budgets.answered(HOST, ticket, httpx.Headers(spent))
        started = loop.time()
        await budgets.take(HOST, "GET", "/v2/")
        return loop.time() - started, budgets.host(HOST).in_flight

    waited, in_flight = asyncio.run(main())
    assert waited >= 0.99 and in_flight == 1


@dataclass
class Events:
    waits: list[tuple[str, float]]
    remaining: list[tuple[str, int]]

    def on_budget_wait(self, host: str, seconds: float) -> None:
        self.waits.append((host, seconds))

    def on_ratelimit(self, host: str, remaining: int) -> None:
        self.remaining.append((host, remaining))


def test_a_spec_that_waits_shows_as_waiting_and_events_are_told() -> None:
    events = Events([], [])

    async def main() -> tuple[dict[str, str], dict[str, str]]:
        budgets = Budgets(events=events)
        budgets.limit(HOST, 1.0, 1)

        async def of(spec: str) -> None:
            current_spec.set(spec)
            ticket = await budgets.take(HOST, "GET", "/")
            said = httpx.Headers({"RateLimit-Limit": "9", "RateLimit-Remaining": "8"})
            budgets.answered(HOST, ticket, said)

        await of("first")  # took the one token
        waiting = asyncio.ensure_future(of("second"))  # waits about 1 s
        while "second" not in budgets.waiting():
            await asyncio.sleep(0.05)
        during = dict(budgets.waiting())
        await waiting
        return during, dict(budgets.waiting())

    during, after = asyncio.run(main())
    assert during == {"second": HOST}
    assert after == {}
    assert [h for h, _s in events.waits] == [HOST] and events.waits[0][1] >= 0.5
    assert events.remaining == [(HOST, 8), (HOST, 8)]


# -- against a real registry ------------------------------------------------------------


@dataclass
class Rig:
    registry: Registry
    proxy: FaultProxy


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("budget")
    registry = start_registry()
    base = Image("linux", "amd64", [make_layer({"bin/a": os.urandom(20_000)})])
    push_layout(write_layout(root / "base", [base], index=False), f"{registry.host}/base/app:1")
    proxy = FaultProxy(registry.host)
    yield Rig(registry, proxy)
    proxy.stop()
    registry.stop()


@pytest.fixture
def proxy(rig: Rig) -> Iterator[FaultProxy]:
    rig.proxy.clear()
    rig.proxy.seen.clear()
    yield rig.proxy
    rig.proxy.clear()
    rig.proxy.headers = {}
    rig.proxy.quota = None


def write_specs(cli: Cli, proxy: FaultProxy, count: int, repo: str) -> None:
    for i in range(count):
        cli.write_spec(
            f"s{i:03d}.yaml",
            f"""
            base: {proxy.host}/base/app:1
            targets: [{proxy.host}/{repo}:t{i}]
            """,
            spec_name=f"s{i:03d}",
        )


def settings_file(cli: Cli, text: str) -> list[str]:
    path = cli.root / "settings.yaml"
    path.write_text(text)
    return ["--config", str(path)]


def busiest_second(seen: list[Seen]) -> int:
    """The most requests that arrived within any one second (a sliding window)."""
    times = sorted(s.arrived for s in seen)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] > 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def synced(output: str, count: int) -> int:
    return sum(
        f"s{i:03d}: applied" in output or f"s{i:03d}: in sync" in output for i in range(count)
    )


def test_budget_bounds_arrivals_and_500_specs_sync(rig: Rig, proxy: FaultProxy, cli: Cli) -> None:
    rate, burst, count = 50, 10, 500
    write_specs(cli, proxy, count, "many/app")
    # The registry says what is left (Docker Hub style, plenty) and refuses a few requests.
    proxy.quota = Quota(limit=1_000_000, window=3600, style="docker")
    fault = proxy.add(
        Fault(
            "HEAD", r"/manifests/t4\d$", "status", status=429, headers={"Retry-After": "1"}, times=3
        )
    )
    args = settings_file(
        cli, f'registries: {{"{proxy.host}": {{requests_per_second: {rate}, burst: {burst}}}}}\n'
    )
    result = cli("apply", "-v", *args, timeout=120)
    assert result.code == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert fault.fired == 3
    busiest = busiest_second(proxy.seen)
    arrivals = sorted(s.arrived for s in proxy.seen)
    span = arrivals[-1] - arrivals[0]
    methods = collections.Counter(s.method for s in proxy.seen)
    print(f"{len(proxy.seen)} requests ({dict(methods)}) in {span:.1f}s; busiest second {busiest}")
    assert len(proxy.seen) >= 2 * count
    # The bucket lets at most rate + burst requests go in any second. The proxy sees them after
    # the client's send path, which on a busy event loop takes up to ~0.1 s for the last of a
    # burst and a few ms for the others: a window of arrivals may hold a tenth of a second of
    # the rate more (measured: 59 to 63 with rate 50 and burst 10; without a budget, 345).
    assert busiest <= rate + burst + rate // 10, busiest
    # And over the whole run, the rate itself: n requests take (n - burst) / rate seconds.
    assert span >= (len(arrivals) - burst) / rate - 0.2, span
    assert synced(result.stderr, count) == count
    for i in (0, 249, 499):
        assert walk(rig.registry.host, "many/app", f"t{i}").problems == []


@pytest.mark.parametrize("style", ["ietf", "docker", "none"])
def test_low_server_budget_slows_down_instead_of_429(
    rig: Rig, proxy: FaultProxy, cli: Cli, style: str
) -> None:
    """The same budget, said in RateLimit headers (either style), or not said at all: only the
    registry that says nothing until it refuses gets 429s (which Retry-After then absorbs)."""
    count, limit = 30, 25
    write_specs(cli, proxy, count, f"slow/{style}")
    proxy.quota = quota = Quota(limit=limit, window=3, style=style)
    result = cli("apply")
    assert result.code == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert synced(result.stderr, count) == count
    refused = [s for s in proxy.seen if s.status == 429]
    print(f"{style}: {len(proxy.seen)} requests, {len(refused)} refused")
    assert len(proxy.seen) > 2 * limit  # the budget ran out twice over: it had to wait
    if style == "none":
        assert len(refused) > 0 and quota.refused == len(refused)
    else:
        assert refused == [] and quota.refused == 0


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{requests_per_second: 0}", "requests_per_second"),
        ("{requests_per_second: -2}", "requests_per_second"),
        ("{requests_per_second: 5, burst: 0}", "burst"),
        ("{burst: 5}", "burst needs requests_per_second"),
    ],
)
def test_bad_budget_settings_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str, message: str
) -> None:
    for name in [n for n in os.environ if n.startswith("RECONCILER_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "c.yaml"
    config.write_text(f"registries: {{'r.test': {entry}}}\n")
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings(config)
    assert "r.test" in str(caught.value)


def test_budget_settings_reach_the_transport_under_the_api_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("RECONCILER_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "c.yaml"
    config.write_text(
        "registries:\n"
        "  docker.io: {requests_per_second: 2.5}\n"
        "  'r.test:5000': {requests_per_second: 40, burst: 7}\n"
    )
    settings = load_settings(config)
    stores = open_stores(settings)
    budgets = stores.registries.transport.budgets
    assert budgets is stores.budgets
    hub = budgets.host("registry-1.docker.io")  # where docker.io's requests go
    assert (hub.rate, hub.burst) == (2.5, 3)  # burst: the rate rounded up
    mine = budgets.host("r.test:5000")
    assert (mine.rate, mine.burst) == (40, 7)
    assert budgets.host("docker.io").rate is None
    assert budgets.low_water == settings.concurrency and budgets.cap == settings.retry_max_delay


# -- the daemon: /status and /metrics -----------------------------------------------------


def metric(text: str, name: str, host: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f'{name}{{host="{host}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_daemon_shows_waits_remaining_and_requests_per_pass(
    rig: Rig, proxy: FaultProxy, cli: Cli
) -> None:
    count = 60
    write_specs(cli, proxy, count, "daemon/app")
    proxy.quota = Quota(limit=100_000, window=3600)
    config = cli.root / "settings.yaml"
    config.write_text(f'registries: {{"{proxy.host}": {{requests_per_second: 20, burst: 1}}}}\n')
    with running(cli, config=str(config), resync_interval="3600") as daemon:

        def waiting() -> list[str]:
            specs = daemon.get("/status").json()["specs"]
            return [s["name"] for s in specs if s.get("waiting") == f"request budget of {host}"]

        host = proxy.host
        shown, _ = wait_for("a spec waiting for budget on /status", waiting, timeout=30)
        wait_for("/readyz", lambda: daemon.get("/readyz").status_code == 200, timeout=60)
        status = daemon.status()
        text = daemon.get("/metrics").text
    assert set(shown) <= set(status)
    assert all(s["state"] == "Synced" and "waiting" not in s for s in status.values()), status
    assert len(status) == count
    sent = len(proxy.seen)
    assert metric(text, "reconciler_pass_requests", host) == sent
    remaining = metric(text, "reconciler_registry_ratelimit_remaining", host)
    assert remaining is not None and 100_000 - sent <= remaining < 100_000
    waited = metric(text, "reconciler_registry_budget_wait_seconds_total", host)
    assert waited is not None and waited >= 0.5  # at least the wait /status showed


def test_spent_server_budget_fails_specs_naming_host_and_wait(
    rig: Rig, proxy: FaultProxy, cli: Cli
) -> None:
    write_specs(cli, proxy, 5, "spent/app")
    proxy.quota = quota = Quota(limit=12, window=3600)
    result = cli("apply")
    assert result.code == 1, result.stdout + result.stderr
    assert f"the request budget of {proxy.host} is spent" in result.stdout, result.stdout
    assert "resets in 3600s, longer than retry_max_delay (30s)" in result.stdout
    assert "Traceback" not in result.stderr
    assert quota.refused <= 8  # the last answers said so: not hammered (at most what flew)
