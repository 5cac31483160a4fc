"""`python -m bench.status_page [--specs N]`: the status page's cost with many specs.

A StatusBoard of N synthetic specs (default 10,000: two tags each, one in 20 a fan-out of
three images, one in 50 Failed with a message, one in 100 Invalid) behind the daemon's own
HTTP server (hypercorn, in this process, on a loopback port). Measured:

- the handler: the overview, its live fragment, a 304 for an unchanged ETag, a state filter
  and a search, each the median of `--runs` GETs over HTTP, with the bytes of each answer;
- `/status` beside it, the JSON that the page does not make the browser poll;
- a browser (Debian's chromium through Playwright, when installed): the time from navigation
  to the load event and until the script's first poll has answered, and the bytes received.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import threading
import time
from pathlib import Path

import httpx

from reconciler.daemon.http import HookTargets, HttpServer
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.status import InstanceStatus, SpecStatus, StatusBoard, TagStatus
from reconciler.model.state import SpecState
from reconciler.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")


def synthetic(count: int) -> list[SpecStatus]:
    now = time.time()
    specs = []
    for i in range(count):
        name = f"team{i % 40:02d}-app{i:05d}"
        digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()  # as random as real ones
        tags = tuple(
            TagStatus(f"registry.example.com/team{i % 40:02d}/app{i:05d}:{t}", digest, digest)
            for t in ("1", "latest")
        )
        state, message = SpecState.SYNCED, None
        if i % 50 == 7:
            state, message = SpecState.FAILED, f"{name}.yaml:6: spec.base: registry said 503"
        elif i % 100 == 13:
            state, message = SpecState.INVALID, f"{name}.yaml:4: invalid YAML"
        instances = ()
        if i % 20 == 3:
            instances = tuple(
                InstanceStatus(f"{name}[1.{v}.0]", SpecState.SYNCED, tags[:1]) for v in range(3)
            )
        specs.append(
            SpecStatus(
                name, f"specs/{name}.yaml", state, tags, now, now, message, 0, None, instances
            )
        )
    return specs


async def _nothing(_pushes: object) -> int:
    return 0


def serve(
    board: StatusBoard,
) -> tuple[int, HttpServer, asyncio.AbstractEventLoop, threading.Thread]:
    settings = Settings(listen="127.0.0.1:0")
    server = HttpServer(settings, board, Metrics(board), HookTargets(_nothing, lambda: None))
    port = server.open()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    return port, server, loop, thread


def timed(
    client: httpx.Client, path: str, runs: int, etag: str | None = None, gzip: bool = True
) -> tuple[float, int, int]:
    """Median seconds of `runs` GETs of `path`; one answer's bytes on the wire and decoded."""
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    headers |= {"If-None-Match": etag} if etag else {}
    times, wire, size = [], 0, 0
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.get(path, headers=headers)
        times.append(time.perf_counter() - started)
        wire, size = answer.num_bytes_downloaded, len(answer.content)
    return statistics.median(times), wire, size


def browser_load(port: int) -> tuple[float, float, int] | None:
    """(seconds to the load event, seconds until live, body bytes received) in chromium."""
    if not CHROMIUM.exists():
        return None
    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=flags)
        page = browser.new_page()
        received: list[int] = []
        page.on("requestfinished", lambda r: received.append(r.sizes()["responseBodySize"]))
        started = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
        loaded = time.perf_counter() - started
        page.locator("#live-state.live").wait_for(timeout=10_000)
        live = time.perf_counter() - started
        browser.close()
    return loaded, live, sum(received)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.status_page", description=__doc__)
    parser.add_argument("--specs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    board = StatusBoard()
    board.update(synthetic(args.specs))
    board.ready = True
    port, server, loop, thread = serve(board)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        etag = client.get("/").headers["etag"]
        status_etag = client.get("/status").headers["etag"]
        rows = [
            ("overview /", *timed(client, "/", args.runs)),
            ("overview /, no gzip", *timed(client, "/", args.runs, gzip=False)),
            ("live fragment /?fragment=1", *timed(client, "/?fragment=1", args.runs)),
            ("unchanged (304)", *timed(client, "/", args.runs, etag)),
            ("?state=Failed", *timed(client, "/?state=Failed", args.runs)),
            ("?q=app09", *timed(client, "/?q=app09", args.runs)),
            ("last page ?page=100", *timed(client, "/?page=100", args.runs)),
            ("/status (JSON)", *timed(client, "/status", max(3, args.runs // 5), gzip=False)),
            ("/status unchanged (304)", *timed(client, "/status", args.runs, status_etag)),
        ]
    print(f"{args.specs:,} specs; median of {args.runs} GETs over loopback HTTP")
    print(f"  {'':<28} {'time':>8}     {'on the wire':>12}  {'decoded':>10}")
    for what, seconds, wire, size in rows:
        print(
            f"  {what:<28} {seconds * 1000:8.1f} ms  {wire / 1024:9.1f} KiB  {size / 1024:7.1f} KiB"
        )
    loaded = browser_load(port)
    if loaded is not None:
        load, live, size = loaded
        print(
            f"  chromium: load event {load * 1000:.0f} ms, live (first poll answered) "
            f"{live * 1000:.0f} ms, {size / 1024:.1f} KiB received"
        )
    loop.call_soon_threadsafe(server.stop)
    thread.join(timeout=10)


if __name__ == "__main__":
    main()
