"""HTTP for every registry: connection pools, authentication, retries and redirects.

- One connection pool per origin and TLS policy (plain HTTP; HTTPS with the system's CAs;
  HTTPS with one `ca_file`): http1.py's transport, or httpx's behind a proxy.
- Each request is authorized for the host it goes to (auth.py). A `401` is answered once.
- Requests whose body can be sent again (none, or bytes) are retried by the retry policy on
  transport failures and retryable statuses, honouring `Retry-After`. A streamed body cannot
  be sent again: its failure is raised as retryable, and the caller starts over (a blob upload
  restarts with a fresh upload session).
- Redirects are followed by hand, for GET and HEAD only: relative `Location` resolved against
  the request, at most 5 hops, never from HTTPS to HTTP, and `Authorization` dropped as soon as
  a hop leaves the origin it was meant for.
- A connection refused by a host that has not answered once in this process is marked
  `first_contact_refused`: the retry policy of a one-shot command gives up on it early.
- Every request that goes on the wire (retries, redirect hops and token requests included)
  first waits for its host's turn in the request budget (budget.py), and every answer's
  RateLimit headers go back to it.
- Nothing is decoded on the wire: requests say `Accept-Encoding: identity`, bodies are read
  raw, and an answer that is encoded anyway (`Content-Encoding: gzip`) is refused, naming the
  registry: a digest is of the bytes a document or blob is, and a decoder fed by a hostile
  server is a decompression bomb (1.8 KB of `gzip, gzip` inflated to 2 GB in httpx).
- Time is bounded beyond the read timeout (limits.py): an answer's head within the request
  deadline; a document read whole (read_capped) within the same deadline, head and body; a
  blob's body at a minimum rate over a window (body_chunks).
- Header numbers are parsed by numbers.py only: a Content-Length of `²` is an error naming the
  registry and the header, never an internal error.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler import __version__
from reconciler.errors import (
    RETRYABLE_STATUSES,
    AuthError,
    BodyError,
    DocumentError,
    NotFoundError,
    ReconcilerError,
    RegistryError,
    RegistryErrorDetail,
)
from reconciler.oci.document import load_json
from reconciler.store.registry.auth import (
    TOKEN_BODY_LIMIT,
    HostAuth,
    load_credentials,
    log_safe,
    netloc,
    scopes_for,
)
from reconciler.store.registry.budget import Budgets
from reconciler.store.registry.http1 import Origin
from reconciler.store.registry.inflight import InFlight
from reconciler.store.registry.limits import Progress, TooSlow, WireLimits
from reconciler.store.registry.numbers import HeaderNumberError, header_decimal, shown
from reconciler.store.registry.retry import RetryPolicy, parse_retry_after
from reconciler.store.registry.transport import (
    RegistryOptions,
    TransportPolicy,
    is_loopback,
    policy_for,
)

log = logging.getLogger("reconciler.http")

USER_AGENT = f"reconciler/{__version__}"
MAX_REDIRECTS = 5
ERROR_BODY_LIMIT = 1024 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
LIMITS_CONNECTIONS = 64  # per origin, in flight at once
LIMITS_IDLE = 32  # per origin, kept open between requests
LIMITS = httpx.Limits(max_connections=LIMITS_CONNECTIONS, max_keepalive_connections=LIMITS_IDLE)

Content = bytes | AsyncIterable[bytes] | None


class HttpTransport:
    def __init__(
        self,
        options: Mapping[str, RegistryOptions] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        on_response: Callable[[str, str, int], None] | None = None,
        budgets: Budgets | None = None,
        limits: WireLimits | None = None,
    ) -> None:
        self._options = dict(options or {})
        self.limits = limits or WireLimits()
        # Told (host, method, status) of every answer; status 0 for a transport failure.
        self._on_response = on_response
        self._env = env
        self._timeout = timeout
        self.retry = retry or RetryPolicy()
        self._pools: dict[tuple[str, Path | None, str], httpx.AsyncBaseTransport] = {}
        self._timeouts = httpx.Timeout(timeout, connect=min(10.0, timeout)).as_dict()
        self._auth: dict[str, HostAuth] = {}
        self._answered: set[str] = set()  # host[:port] of every origin that answered once
        self._api: dict[str, str] = {}  # registry host -> host[:port] its API is served from
        self.budgets = budgets or Budgets(cap=self.retry.cap)
        self.in_flight = InFlight()  # each spec's requests on the wire (spec_deadline's message)
        for host, entry in self._options.items():
            if entry.requests_per_second is not None:
                # Keyed by the host requests go to (Docker Hub's API host for docker.io).
                self.budgets.limit(self.api_netloc(host), entry.requests_per_second, entry.burst)

    def policy(self, host: str) -> TransportPolicy:
        return policy_for(host, self._options.get(host))

    def api_netloc(self, host: str) -> str:
        """The host[:port] a registry's API is served from (Docker Hub's API host for docker.io)."""
        api = self._api.get(host)
        if api is None:
            api = self._api[host] = netloc(httpx.URL(self.policy(host).base_url))
        return api

    def auth(self, host: str) -> HostAuth:
        auth = self._auth.get(host)
        if auth is None:
            auth = self._auth[host] = HostAuth(
                host,
                lambda: load_credentials(host, self._env),
                self._fetch_token,
                lambda realm: self._plain_realm_ok(host, realm),
            )
        return auth

    def _plain_realm_ok(self, host: str, realm: str) -> bool:
        """Whether `host`'s credentials may go to a token realm over plain HTTP: only when the
        registry itself is plain HTTP (on loopback, or configured insecure), or the realm's
        host is configured `insecure: true` by name; never when the realm's host is configured
        `insecure: false`. A TLS registry whose challenge names an http:// realm, even on
        loopback, gets no credentials (docs/reliability.md)."""
        options = self._options.get(realm)
        if options is not None and options.insecure is not None:
            return options.insecure
        return self.policy(host).scheme == "http"

    def _pool(self, url: httpx.URL) -> httpx.AsyncBaseTransport:
        """The pool for a URL's origin, under its TLS policy (scheme, and the host's CA file).

        One pool per origin (http1.py's Origin). Requests go to the transport itself, not
        through an httpx client: this module does redirects, auth and headers, and the client's
        cookie jar and wrapping cost 15% of a no-op's CPU.
        """
        ca_file = None
        if url.scheme == "https":
            options = self._options.get(netloc(url))
            ca_file = options.ca_file if options is not None else None
        key = (url.scheme, ca_file, netloc(url))
        pool = self._pools.get(key)
        if pool is None:
            verify = TransportPolicy("", url.scheme, ca_file).ssl_context()
            pool = self._pools[key] = _transport(url, verify)
        return pool

    async def request(
        self,
        host: str | None,
        method: str,
        url: httpx.URL,
        *,
        headers: Mapping[str, str] | None = None,
        content: Content = None,
        stream: bool = False,
        retry_here: bool = True,
    ) -> httpx.Response:
        """Send a request to registry `host` (None: no registry auth), retrying as allowed.

        Never returns a retryable status: once retries are spent, that becomes an error.
        `retry_here=False` leaves every retry to the caller (steps of an upload session, which
        must start over with a fresh session rather than repeat a step).
        """
        replayable = _resendable(content) and retry_here

        async def attempt() -> httpx.Response:
            response = await self._authorized(host, method, url, headers, content, stream)
            if response.status_code not in RETRYABLE_STATUSES:
                return response
            said = response.headers.get("Retry-After")
            after = parse_retry_after(said)
            if said is not None and after is None:
                log.warning(
                    "%s: %s %s answered %d with Retry-After %s, neither seconds nor a date: "
                    "waiting as the retry policy says",
                    netloc(url),
                    method,
                    log_safe(url),
                    response.status_code,
                    shown(said),
                )
            if replayable and after is not None and after > self.retry.cap:
                why = (
                    f"registry asked to wait (Retry-After {after:.0f}s), longer than "
                    f"retry_max_delay ({self.retry.cap:g}s)"
                )
                raise await error_from(response, why, retryable=False)
            raise await error_from(response, f"{netloc(url)} answered {response.status_code}")

        if not replayable:
            return await attempt()  # the caller starts over, with a fresh session
        try:
            return await self.retry.run(attempt, f"{method} {log_safe(url)}")
        except RegistryError as exc:
            exc.retryable = False  # this layer spent the retries already
            raise

    async def _authorized(
        self,
        host: str | None,
        method: str,
        url: httpx.URL,
        headers: Mapping[str, str] | None,
        content: Content,
        stream: bool,
    ) -> httpx.Response:
        if host is None or netloc(url) != self.api_netloc(host):
            # Not the registry's own API host (an upload Location elsewhere): no credentials.
            return await self._follow(method, url, dict(headers or {}), content, stream)
        auth = self.auth(host)
        scopes = scopes_for(method, url)
        sent = await auth.authorization(scopes)
        response = await self._follow(method, url, _with(headers, sent), content, stream)
        challenge = response.headers.get("WWW-Authenticate")
        if response.status_code != 401 or not challenge:
            return response
        await response.aclose()
        answer = await auth.answer(challenge, scopes, sent)
        if not _resendable(content):
            # The body is spent. The caller starts over, now authenticating up front.
            raise AuthError(
                f"{host} asked for authentication during a streamed upload",
                method=method,
                url=log_safe(url),
                status=401,
                retryable=True,
            )
        response = await self._follow(method, url, _with(headers, answer), content, stream)
        if response.status_code == 401:
            raise await error_from(response, await auth.refusal(scopes))
        return response

    async def _follow(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        content: Content,
        stream: bool,
    ) -> httpx.Response:
        origin = (url.scheme, netloc(url))
        for _hop in range(MAX_REDIRECTS + 1):
            if (url.scheme, netloc(url)) != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            pool = self._pool(url)
            request = httpx.Request(
                method,
                url,
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers},
                content=content,
                extensions={"timeout": self._timeouts},
            )
            # The budget before the pool: a request waiting for its turn holds no connection.
            ticket = await self.budgets.take(netloc(url), method, log_safe(url))
            sent = self.in_flight.begin(method, log_safe(url))
            loop = asyncio.get_running_loop()
            # A streamed body (a blob upload) takes what its source takes: its pace is the
            # source's to keep (body_chunks' rate rule), and the answer's head comes after it.
            deadline = loop.time() + self.limits.deadline if _resendable(content) else None
            try:
                try:
                    async with asyncio.timeout_at(deadline):
                        response = await pool.handle_async_request(request)
                        response.request = request
                        response.extensions = {**response.extensions, _DEADLINE: deadline}
                        if stream:
                            response.stream = sent.watching(response.stream)  # until closed
                        else:
                            response = await _read_whole(response)
                            sent.end()
                except TimeoutError:
                    raise httpx.ReadTimeout(
                        f"no whole answer in {self.limits.deadline:g} s (request_deadline)"
                    ) from None
            except httpx.HTTPError as exc:
                sent.end()
                self.budgets.answered(netloc(url), ticket, None)
                if self._on_response is not None:
                    self._on_response(netloc(url), method, 0)
                raise self._transport_error(exc, method, url) from exc
            except BaseException:
                sent.end()
                self.budgets.answered(netloc(url), ticket, None)
                raise
            try:
                self.budgets.answered(netloc(url), ticket, response.headers)
            except BaseException:
                await response.aclose()  # a connection slot is never left behind
                raise
            self._answered.add(netloc(url))
            if log.isEnabledFor(logging.DEBUG):  # not a URL's text per request for nothing
                log.debug("%s %s -> %s", method, log_safe(url), response.status_code)
            if self._on_response is not None:
                self._on_response(netloc(url), method, response.status_code)
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or method not in ("GET", "HEAD"):
                return response
            await response.aclose()
            if not location:
                raise RegistryError(
                    "redirect without Location", method=method, url=log_safe(url), status=302
                )
            target = url.join(location)
            if target.scheme not in ("http", "https") or (
                url.scheme == "https" and target.scheme != "https"
            ):
                raise RegistryError(
                    f"refusing a redirect from {url.scheme} to {target.scheme}",
                    method=method,
                    url=log_safe(url),
                    status=response.status_code,
                )
            url = target
        raise RegistryError(
            f"more than {MAX_REDIRECTS} redirects", method=method, url=log_safe(url)
        )

    def _transport_error(self, exc: httpx.HTTPError, method: str, url: httpx.URL) -> RegistryError:
        host = netloc(url)
        if isinstance(exc, httpx.ConnectError) and _refused(exc):
            return RegistryError(
                f"ConnectError: {host} refused the connection",
                method=method,
                url=log_safe(url),
                retryable=True,
                first_contact_refused=host not in self._answered,
            )
        return RegistryError(
            f"{type(exc).__name__} from {host}: {exc}".rstrip(": "),
            method=method,
            url=log_safe(url),
            retryable=True,
        )

    async def _fetch_token(
        self, method: str, url: httpx.URL, headers: dict[str, str], form: dict[str, str] | None
    ) -> tuple[int, bytes]:
        content = None
        if form is not None:
            content = urllib.parse.urlencode(form).encode()
            headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        response = await self.request(
            None, method, url, headers=headers, content=content, stream=True
        )
        try:
            return response.status_code, await read_capped(response, TOKEN_BODY_LIMIT)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()


def _transport(url: httpx.URL, verify: ssl.SSLContext | bool) -> httpx.AsyncBaseTransport:
    """An origin's connection pool: on our asyncio network layer (netstream.py), or through the
    proxy the environment names for it (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY), as httpx
    and Go's registry clients read them."""
    proxy = _proxy_for(url)
    if proxy is not None:
        return httpx.AsyncHTTPTransport(verify=verify, limits=LIMITS, proxy=proxy)
    context = None
    if url.scheme == "https":  # a plain-HTTP origin builds no TLS context (nor loads certifi)
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
    return Origin(context, max_connections=LIMITS_CONNECTIONS, max_idle=LIMITS_IDLE)


def _proxy_for(url: httpx.URL) -> str | None:
    """The proxy the environment names for a URL, if any: never for a loopback registry (as Go's
    clients decide, so a proxy set for the outside world does not catch a local registry)."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or is_loopback(netloc(url)):
        return None
    if urllib.request.proxy_bypass(netloc(url)):  # NO_PROXY, by host or host:port
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _refused(exc: BaseException) -> bool:
    """Whether a failed connect was refused (ECONNREFUSED), not a DNS, TLS or routing failure.

    The OS errors are in the chain: netstream's ConnectError is raised from them (a group when
    several addresses failed), and behind a proxy httpx's transport wraps anyio's ("All
    connection attempts failed"). So the chain is searched, exception groups included.
    """
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return True
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


def _resendable(content: Content) -> bool:
    """A body that can be sent again: none, or bytes (a stream is spent once sent)."""
    return content is None or isinstance(content, bytes)


def _with(headers: Mapping[str, str] | None, authorization: str | None) -> dict[str, str]:
    out = dict(headers or {})
    if authorization is not None:
        out["Authorization"] = authorization
    return out


_DEADLINE = "reconciler.deadline"  # response.extensions: the loop time its request must end


async def _read_whole(response: httpx.Response) -> httpx.Response:
    """A non-streamed answer (a HEAD's, a PUT's, a POST's: statuses and headers, or an error
    envelope), read raw within ERROR_BODY_LIMIT, as a response that holds its bytes."""
    data = bytearray()
    try:
        # An encoded body is never decoded (nor needed: the status and headers say it all).
        if response.headers.get("Content-Encoding", "identity").lower() == "identity":
            async for chunk in response.aiter_raw():
                data += chunk
                if len(data) > ERROR_BODY_LIMIT:
                    raise httpx.RemoteProtocolError(
                        f"an answer's body over the {ERROR_BODY_LIMIT}-byte limit"
                    )
    finally:
        await response.aclose()
    whole = httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(bytes(data)),
        extensions=response.extensions,
        request=response.request,
    )
    await whole.aread()  # raw bytes, or none: nothing for a decoder to inflate
    return whole


def _where(response: httpx.Response) -> str:
    """`registry 127.0.0.1:5000: GET /v2/app/manifests/1`: who answered what, for messages."""
    request = response.request
    return f"{netloc(request.url)}: {request.method} {request.url.path}"


def _refuse_encoded(response: httpx.Response) -> None:
    coding = response.headers.get("Content-Encoding")
    if coding is not None and coding.strip().lower() not in ("", "identity"):
        request = response.request
        raise RegistryError(
            f"{netloc(request.url)} answered with Content-Encoding {shown(coding)}, although "
            "asked for identity: refused, not decoded (docs/reliability.md)",
            method=request.method,
            url=log_safe(request.url),
            status=response.status_code,
        )


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """A body read into memory, refusing more than `limit` bytes (declared or actual), an
    encoded body, and a body not whole by its request's deadline."""
    declared = int_header(response, "Content-Length")
    if declared is not None and declared > limit:
        raise DocumentError(
            f"{_where(response)}: announced {declared} bytes (Content-Length), over the "
            f"{limit}-byte limit"
        )
    _refuse_encoded(response)
    deadline = response.extensions.get(_DEADLINE)
    body = bytearray()
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in body_chunks(response):
                body += chunk
                if len(body) > limit:
                    announced = "chunked" if declared is None else f"{declared} bytes announced"
                    raise DocumentError(
                        f"{_where(response)}: body over the {limit}-byte limit ({announced})"
                    )
    except TimeoutError:
        request = response.request
        raise BodyError(
            f"{netloc(request.url)}: {len(body)} bytes of the body in the request deadline, "
            "then no more time (request_deadline)",
            method=request.method,
            url=log_safe(request.url),
            status=response.status_code,
        ) from None
    return bytes(body)


async def body_chunks(
    response: httpx.Response,
    chunk_size: int | None = None,
    limits: WireLimits | None = None,
) -> AsyncIterator[bytes]:
    """A response body as chunks, raw; a transport failure mid-body, or (with `limits`) a body
    under the minimum rate, becomes a retryable error naming the registry."""
    _refuse_encoded(response)
    if response.is_stream_consumed:  # read whole already (_read_whole): its raw bytes
        if response.content:
            yield response.content
        return
    progress = Progress(limits) if limits is not None else None
    request = response.request
    # Pieces are gathered into `chunk_size` here, not by httpx's chunker: the rate rule must
    # see every piece as it arrives, and a trickle never fills a chunk.
    pending = bytearray()
    try:
        async for piece in response.aiter_raw():
            if progress is not None:
                progress.add(len(piece))
            if chunk_size is None:
                yield piece
                continue
            pending += piece
            while len(pending) >= chunk_size:
                yield bytes(pending[:chunk_size])
                del pending[:chunk_size]
        if pending:
            yield bytes(pending)
    except (httpx.HTTPError, TooSlow) as exc:
        await response.aclose()
        raise BodyError(
            f"{type(exc).__name__} from {netloc(request.url)} while reading the body: {exc}",
            method=request.method,
            url=log_safe(request.url),
            status=response.status_code,
        ) from exc


def int_header(response: httpx.Response, name: str) -> int | None:
    """A header's number (numbers.py), None when absent; a value that is not one is an error
    naming the registry, the request and the header."""
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        return header_decimal(name, value)
    except HeaderNumberError as exc:
        request = response.request
        raise RegistryError(
            f"{netloc(request.url)} answered with {exc}",
            method=request.method,
            url=log_safe(request.url),
            status=response.status_code,
        ) from None


class ErrorItem(BaseModel):
    """One entry of a registry's error envelope (distribution spec, "Error Codes")."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    code: str = Field(default="", strict=True)
    message: str = Field(default="", strict=True)


class ErrorEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    errors: tuple[ErrorItem, ...] = ()


async def error_from(
    response: httpx.Response, message: str, *, retryable: bool | None = None
) -> RegistryError:
    """An error for an unexpected answer, carrying the registry's error codes; closes it.

    An error body cut short (or not whole by the request's deadline) makes the error retryable
    whatever its status, unless `retryable` says otherwise: the answer was not whole, and the
    retry policy fetches it again; once the retries are spent, the message says so."""
    details: tuple[RegistryErrorDetail, ...] = ()
    try:
        body = await read_capped(response, ERROR_BODY_LIMIT)
        if body:
            envelope = ErrorEnvelope.model_validate(load_json(body, "error body", ERROR_BODY_LIMIT))
            details = tuple(
                RegistryErrorDetail(e.code, e.message[:500]) for e in envelope.errors[:20]
            )
    except BodyError as exc:
        cause = exc.__cause__
        why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        where = netloc(response.request.url)
        message = (
            f"{message}: {where} answered {response.status_code}, its error body cut short ({why})"
        )
        retryable = True if retryable is None else retryable
    except (ReconcilerError, ValidationError, httpx.HTTPError):
        pass  # the status alone still says what went wrong
    finally:
        await response.aclose()
    request = response.request
    cls: type[RegistryError] = RegistryError
    if response.status_code == 404:
        cls = NotFoundError
    elif response.status_code in (401, 403):
        cls = AuthError
    return cls(
        message,
        method=request.method,
        url=log_safe(request.url),
        status=response.status_code,
        errors=details,
        retryable=retryable,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )
