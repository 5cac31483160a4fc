"""Events out of the daemon: one bounded queue and one delivery task per endpoint.

`Notifier.emit` is called from the event loop while records change; it never waits and never
raises: an event an endpoint does not want is skipped, and one that finds the endpoint's queue
full is dropped and counted. Each endpoint's task POSTs its events one after another, so a slow
or hanging endpoint delays only its own queue, never a reconcile nor another endpoint; every
POST is bounded by the endpoint's `timeout` in all (connect, send, wait, read).

Retried, with the process's retry policy (`RetryPolicy`: exponential backoff, full jitter, a
`Retry-After` honoured up to the cap): transport failures and timeouts, 408, 429 and 5xx. Any
other answer but 2xx fails the event at once (redirects are not followed). At shutdown the
queues get `notification_flush` seconds to empty; what is left is dropped and counted.

This is the one module besides the registry store that speaks HTTP (`.importlinter`): webhook
traffic is not registry traffic, and shares neither its clients, its budget nor its metrics.
Secrets stay out of logs and metrics: an endpoint is named by its `name` or index, never by
its URL, and header values read from files are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import Counter

from reconciler.daemon.events import Event, rfc3339
from reconciler.errors import SettingsError
from reconciler.settings import NotificationSettings, Settings
from reconciler.store.registry.retry import RetryPolicy, parse_retry_after

log = logging.getLogger("reconciler.notify")

RESULTS = ("delivered", "failed", "dropped", "retried")
CLOUDEVENTS_TYPE = "application/cloudevents+json; charset=utf-8"
JSON_TYPE = "application/json; charset=utf-8"
_RETRIED_STATUS = frozenset({408, 429})
_SLACK_TEXT_LIMIT = 3000  # characters of one section block's text

_SUMMARY = {
    "applied": "applied",
    "failed": "failed",
    "recovered": "recovered",
    "drift_repaired": "drift repaired",
    "base_moved": "base moved",
    "orphaned": "orphaned",
}


# -- formats (pure) ----------------------------------------------------------------------


def build_plain(event: Event) -> dict[str, Any]:
    return event.as_json()


def build_cloudevent(event: Event, source: str) -> dict[str, Any]:
    """A CloudEvents 1.0 event in structured content mode, with the plain shape as data."""
    return {
        "specversion": "1.0",
        "id": event.id,
        "source": source,
        "type": f"dev.reconciler.{event.kind}",
        "subject": event.spec,
        "time": rfc3339(event.time),
        "datacontenttype": "application/json",
        "data": event.as_json(),
    }


def build_slack(event: Event) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (the notification line) and `blocks`."""
    headline = f"{event.spec}: {_SUMMARY[event.kind]} ({event.state})"
    lines = [f"*{_escape(event.spec)}*: {_SUMMARY[event.kind]} ({event.state})"]
    lines.append(_escape(event.message))
    for tag in event.tags:
        lines.append(f"`{_escape(tag.target)}`: {_short(tag.old)} -> {_short(tag.new)}")
    text = "\n".join(lines)
    if len(text) > _SLACK_TEXT_LIMIT:
        text = text[: _SLACK_TEXT_LIMIT - 1] + "\u2026"
    context = f"{_escape(event.file)} | {rfc3339(event.time)} | id {event.id}"
    return {
        "text": headline,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters (&, <, >) as its docs ask."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _short(digest: str | None) -> str:
    if digest is None:
        return "(none)"
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}:{hex_[:12]}" if hex_ else digest


def build_body(event: Event, fmt: str, source: str) -> tuple[bytes, str]:
    """The request body and its Content-Type for an endpoint's format."""
    if fmt == "cloudevents":
        body, content_type = build_cloudevent(event, source), CLOUDEVENTS_TYPE
    elif fmt == "slack":
        body, content_type = build_slack(event), JSON_TYPE
    else:
        body, content_type = build_plain(event), JSON_TYPE
    return json.dumps(body, ensure_ascii=False).encode("utf-8"), content_type


def default_source() -> str:
    return f"reconciler/{socket.gethostname()}"


# -- delivery ------------------------------------------------------------------------------


@dataclass
class _Endpoint:
    label: str
    settings: NotificationSettings
    queue: asyncio.Queue[Event]
    dropping: bool = False  # dropped the last event offered: warn once per streak
    task: asyncio.Task[None] | None = None
    client: httpx.AsyncClient | None = None
    wanted: frozenset[str] = field(default_factory=frozenset)


class Notifier:
    def __init__(
        self,
        endpoints: Sequence[NotificationSettings],
        *,
        queue: int,
        retry: RetryPolicy,
        counter: Counter,
        source: str | None = None,
    ) -> None:
        self._endpoints = [
            _Endpoint(e.name or str(i), e, asyncio.Queue(queue), wanted=frozenset(e.events))
            for i, e in enumerate(endpoints)
        ]
        self._retry = retry
        self._counter = counter
        self._source = source or default_source()
        for endpoint in self._endpoints:
            for result in RESULTS:  # every series exists from the start, at 0
                counter.labels(endpoint.label, result)

    @classmethod
    def from_settings(cls, settings: Settings, counter: Counter) -> Notifier:
        retry = RetryPolicy(
            settings.notification_retries,
            settings.notification_retry_delay,
            settings.notification_retry_max_delay,
        )
        return cls(
            settings.notifications,
            queue=settings.notification_queue,
            retry=retry,
            counter=counter,
        )

    def check(self) -> str | None:
        """What keeps an endpoint from ever delivering (an unreadable file), for startup."""
        for endpoint in self._endpoints:
            try:
                _url(endpoint)
                _headers(endpoint)
            except SettingsError as exc:
                return str(exc)
        return None

    def start(self) -> None:
        for endpoint in self._endpoints:
            endpoint.client = httpx.AsyncClient(follow_redirects=False)
            endpoint.task = asyncio.ensure_future(self._deliver_all(endpoint))
            endpoint.task.add_done_callback(_ended)

    def emit(self, event: Event) -> None:
        """Queue `event` for every endpoint that wants it; never blocks, never raises."""
        for endpoint in self._endpoints:
            if event.kind not in endpoint.wanted:
                continue
            try:
                endpoint.queue.put_nowait(event)
                endpoint.dropping = False
            except asyncio.QueueFull:
                self._count(endpoint, "dropped")
                if not endpoint.dropping:
                    log.warning(
                        "notifications to %s: queue full (%d); dropping events",
                        endpoint.label,
                        endpoint.queue.maxsize,
                    )
                endpoint.dropping = True

    async def close(self, grace: float) -> None:
        """Let the queues empty for up to `grace` seconds, then drop what is left."""
        running = [e for e in self._endpoints if e.task is not None]
        if not running:
            return
        emptied = [asyncio.ensure_future(e.queue.join()) for e in running]
        _done, late = await asyncio.wait(emptied, timeout=grace)
        for waiter in late:
            waiter.cancel()
        for endpoint in running:
            left = endpoint.queue.qsize()
            if left:
                self._count(endpoint, "dropped", left)
                log.warning(
                    "notifications to %s: %d event(s) dropped at shutdown", endpoint.label, left
                )
            assert endpoint.task is not None  # noqa: S101 - filtered above
            endpoint.task.cancel()
        await asyncio.wait([e.task for e in running if e.task is not None])
        for endpoint in running:
            if endpoint.client is not None:
                await endpoint.client.aclose()

    def _count(self, endpoint: _Endpoint, result: str, n: int = 1) -> None:
        self._counter.labels(endpoint.label, result).inc(n)

    async def _deliver_all(self, endpoint: _Endpoint) -> None:
        while True:
            event = await endpoint.queue.get()
            try:
                await self._deliver(endpoint, event)
            except asyncio.CancelledError:
                self._count(endpoint, "dropped")
                log.warning(
                    "notification %s of %s to %s: dropped at shutdown, mid-delivery",
                    event.kind,
                    event.spec,
                    endpoint.label,
                )
                raise
            finally:
                endpoint.queue.task_done()

    async def _deliver(self, endpoint: _Endpoint, event: Event) -> None:
        body, content_type = build_body(event, endpoint.settings.format, self._source)
        what = f"notification {event.kind} of {event.spec} to {endpoint.label}"
        retry = 0
        while True:
            problem, retryable, retry_after = await self._post(endpoint, body, content_type)
            if problem is None:
                self._count(endpoint, "delivered")
                log.debug("%s: delivered", what)
                return
            wait = self._retry.delay(retry, retry_after) if retryable else None
            if wait is None:
                self._count(endpoint, "failed")
                tries = f" after {retry + 1} tries" if retry else ""
                log.warning("%s failed%s: %s", what, tries, problem)
                return
            self._count(endpoint, "retried")
            log.info("%s: %s; retry %d in %.2fs", what, problem, retry + 1, wait)
            await asyncio.sleep(wait)
            retry += 1

    async def _post(
        self, endpoint: _Endpoint, body: bytes, content_type: str
    ) -> tuple[str | None, bool, float | None]:
        """One POST: (problem or None, whether to retry, Retry-After seconds)."""
        assert endpoint.client is not None  # noqa: S101 - set by start()
        timeout = endpoint.settings.timeout
        try:
            url = _url(endpoint)
            headers = {**_headers(endpoint), "Content-Type": content_type}
            async with asyncio.timeout(timeout):
                response = await endpoint.client.post(
                    url, content=body, headers=headers, timeout=timeout
                )
        except SettingsError as exc:
            return str(exc), False, None
        except (TimeoutError, httpx.TimeoutException):
            return f"no answer within {timeout:g}s", True, None
        except httpx.TransportError as exc:
            # The exception's text may quote the URL: name its kind only.
            return f"transport error ({type(exc).__name__})", True, None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return f"request refused by the client ({type(exc).__name__})", False, None
        status = response.status_code
        if 200 <= status < 300:
            return None, False, None
        retryable = status in _RETRIED_STATUS or status >= 500
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return f"answered {status}", retryable, retry_after if retryable else None


def _ended(task: asyncio.Task[None]) -> None:
    """A delivery task ends only at shutdown; anything else is a bug, and must show."""
    if not task.cancelled() and task.exception() is not None:
        log.error("a notification delivery task stopped", exc_info=task.exception())


def _url(endpoint: _Endpoint) -> str:
    settings = endpoint.settings
    if settings.url is not None:
        return settings.url
    assert settings.url_file is not None  # noqa: S101 - the settings give one of them
    url = _read(settings.url_file, f"notifications[{endpoint.label}].url_file")
    if not url.startswith(("http://", "https://")):
        raise SettingsError(
            f"notifications[{endpoint.label}].url_file {settings.url_file}: "
            "does not hold an http(s) URL"
        )
    return url


def _headers(endpoint: _Endpoint) -> dict[str, str]:
    headers = {}
    for name, value in endpoint.settings.headers.items():
        headers[name] = _header_value(value, f"notifications[{endpoint.label}].headers.{name}")
    for name, path in endpoint.settings.headers_from_files.items():
        where = f"notifications[{endpoint.label}].headers_from_files.{name}"
        headers[name] = _header_value(_read(path, where), f"{where} ({path})")
    return headers


def _header_value(value: str, where: str) -> str:
    """Printable ASCII on one line (RFC 9110 5.5, without obs-text); the value is not quoted."""
    if not all(" " <= c <= "~" or c == "\t" for c in value):
        raise SettingsError(f"{where}: not one line of printable ASCII")
    return value


def _read(path: Path, where: str) -> str:
    try:
        return path.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise SettingsError(f"{where}: cannot read {path}: {reason}") from None
