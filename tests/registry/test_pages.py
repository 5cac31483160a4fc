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
