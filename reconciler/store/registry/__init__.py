"""Talking to registries: transport policy, authentication, and the HTTP client.

httpx is imported here first, without two optional parts it would load for nothing, about
15% of a `diff` start between them (docs/performance.md): httpcore's HTTP/2 connection (h2
and its hpack tables; installed for the daemon's server, while registries are spoken to in
HTTP/1.1 only) and httpx's own command-line client (rich, pygments). A `None` in
`sys.modules` makes an import raise ImportError, which both packages catch with a stand-in;
the entries are removed right after, so that whoever imports h2 later (the daemon's server)
gets it.
"""

from __future__ import annotations

import sys


def _import_httpx_lean() -> None:
    if "httpcore" in sys.modules:
        return
    blocked = [name for name in ("h2", "httpx._main") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import httpcore  # noqa: F401  (httpx imports it on its first client)
        import httpx  # noqa: F401
    finally:
        for name in blocked:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]


_import_httpx_lean()
