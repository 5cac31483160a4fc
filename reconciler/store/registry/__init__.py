"""Talking to registries: transport policy, authentication, and the HTTP client.

httpx is imported here first, without its command-line client (httpx._main, which loads rich
and pygments for nothing): a `None` in `sys.modules` makes that import raise ImportError,
which httpx catches with a stand-in, and the entry is removed right after. httpcore (with h11,
anyio, and h2 where installed) is not loaded at all unless a proxy is used: requests go through
http1.py's transport, and httpx imports httpcore only when its own transport is built.
"""

from __future__ import annotations

import sys


def _import_httpx_lean() -> None:
    if "httpx" in sys.modules:
        return
    blocked = "httpx._main" not in sys.modules
    if blocked:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx  # noqa: F401
    finally:
        if blocked and sys.modules.get("httpx._main", ...) is None:
            del sys.modules["httpx._main"]


_import_httpx_lean()
