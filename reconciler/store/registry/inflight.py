"""The registry requests each spec is waiting on now: what the message of a spec whose pass
ran past the daemon's `spec_deadline` names (which registry, which request).

A request is in flight from the moment it goes on the wire (its turn in the request budget
taken) until its answer is closed: read whole, or streamed to its end and closed by the caller,
or failed. It is the spec's whose task sent it (`logs.current_spec`; work a spec starts and
others share carries the name of the spec that started it). Requests of no spec (`lock`,
`save` outside a pass) are not kept.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import httpx

from reconciler.logs import current_spec

SHOWN = 3  # requests named per spec, at most: the first sent first


class InFlight:
    def __init__(self) -> None:
        self._by_spec: dict[str, dict[int, str]] = {}
        self._ids = itertools.count()

    def begin(self, method: str, url: str) -> Request:
        """A request of the current spec goes on the wire; end the entry when it is over."""
        spec = current_spec.get()
        if spec is None:
            return Request(self, None, 0)
        key = next(self._ids)
        self._by_spec.setdefault(spec, {})[key] = f"{method} {url}"
        return Request(self, spec, key)

    def of(self, spec: str) -> tuple[str, ...]:
        """The requests of `spec` in flight, oldest first (at most SHOWN)."""
        return tuple(self._by_spec.get(spec, {}).values())[:SHOWN]

    def _end(self, spec: str, key: int) -> None:
        requests = self._by_spec.get(spec)
        if requests is not None:
            requests.pop(key, None)
            if not requests:
                del self._by_spec[spec]


class Request:
    """One request's entry; `end` is idempotent."""

    __slots__ = ("_key", "_owner", "_spec")

    def __init__(self, owner: InFlight, spec: str | None, key: int) -> None:
        self._owner, self._spec, self._key = owner, spec, key

    def end(self) -> None:
        if self._spec is not None:
            self._owner._end(self._spec, self._key)
            self._spec = None

    def watching(
        self, stream: httpx.SyncByteStream | httpx.AsyncByteStream
    ) -> httpx.SyncByteStream | httpx.AsyncByteStream:
        """A streamed answer's body that ends this entry when it is closed."""
        if self._spec is None or not isinstance(stream, httpx.AsyncByteStream):
            return stream
        return _Watched(stream, self)


class _Watched(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, request: Request) -> None:
        self._stream, self._request = stream, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        self._request.end()
        await self._stream.aclose()
