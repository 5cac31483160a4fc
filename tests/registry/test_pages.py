"""Tag-list paging: which Link header leads where, and what a page may hold."""

from __future__ import annotations

import httpx
import pytest

from reconciler.store.registry.client import next_page

BASE = httpx.URL("https://r.io/v2/team/app/tags/list?n=1000")


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        (None, None),
        ("", None),
        (
            '</v2/team/app/tags/list?n=1000&last=b>; rel="next"',
            "https://r.io/v2/team/app/tags/list?n=1000&last=b",
        ),
        (
            '<https://r.io/v2/team/app/tags/list?last=c>; rel="next"',
            "https://r.io/v2/team/app/tags/list?last=c",
        ),
        ('</x>; rel="prev", </y>; rel="next"', "https://r.io/y"),
        ('</x>; rel = "next"', "https://r.io/x"),
        ('</x>; rel="prev"', None),
        ("<unterminated", None),
        ('no brackets; rel="next"', None),
        # Another host, another port, or plain HTTP: never followed (credentials stay home).
        ('<https://evil.example/v2/x>; rel="next"', None),
        ('<https://r.io:8443/v2/x>; rel="next"', None),
        ('<http://r.io/v2/x>; rel="next"', None),
    ],
)
def test_next_page_follows_only_rel_next_on_the_same_origin(
    link: str | None, expected: str | None
) -> None:
    found = next_page(BASE, link)
    assert (str(found) if found is not None else None) == expected


def test_a_registry_that_pages_in_a_loop_cannot_keep_us_listing() -> None:
    import asyncio
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from reconciler.store.registry.client import Registries

    asked: list[str] = []

    class Loop(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def do_GET(self) -> None:
            asked.append(self.path)
            body = b'{"name": "x", "tags": ["a"]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Link", '</v2/x/tags/list?n=1000>; rel="next"')  # itself again
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Loop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"

    async def go() -> list[str]:
        async with Registries(env={"DOCKER_CONFIG": "/nonexistent"}) as registries:
            return await registries.client(host).list_tags("x")

    try:
        assert asyncio.run(go()) == ["a"]
    finally:
        server.shutdown()
    assert asked == ["/v2/x/tags/list?n=1000"]
