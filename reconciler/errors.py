"""Every error reconciler raises on purpose, in one tree.

    ReconcilerError
    ├── SpecError               a spec file is wrong: carries file, line and field
    ├── ReferenceError_         an image reference or digest does not parse
    ├── DocumentError           a manifest, index or config is malformed or ambiguous
    │   └── ArchiveError        an archive or a layout is malformed (names file and member)
    ├── VerificationError       bytes do not match their digest or declared size
    ├── ResolveError            a spec's sources cannot be turned into a desired state
    ├── SettingsError           the process settings are wrong
    ├── PushError               several pushes of one spec failed (the first is chained)
    ├── TrustError              a key, signature, payload or trust policy is unusable
    └── RegistryError           a registry answered something we cannot use
        ├── AuthError           401/403 after credentials were offered (or none exist)
        ├── NotFoundError       404 where the thing must exist (a base, a source blob)
        └── BodyError           an answer's body not read whole: cut short, misframed, too
                                slow (retryable: its request may be sent again)

Transport failures (connection refused, reset, timeout) surface as `RegistryError` with
status 0, chained (`raise ... from`) to the httpx exception that caused them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Statuses that say "try again later" (distribution spec and RFC 9110); status 0 is a transport
# failure (refused, reset, timed out) and is retryable too.
RETRYABLE_STATUSES = frozenset({0, 408, 429, 500, 502, 503, 504})


class ReconcilerError(Exception):
    """Root of every error reconciler raises on purpose.

    `retryable` says whether trying the same operation again may succeed (a transport failure,
    a 5xx, a stream cut or corrupted in transit). The retry policy (registry/retry.py) reads it;
    nothing else decides what is retried.
    """

    retryable: bool = False


@dataclass(frozen=True)
class SpecLocation:
    """Where in a spec file a problem is: file, 1-based line, dotted field path."""

    file: str
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return where if not self.field else f"{where}: {self.field}"


class SpecError(ReconcilerError):
    """A spec is invalid. The message names file, line and field.

    `spec_name` is the spec's name when it could still be read (its `metadata.name`, or the
    file stem it defaults to), so that reports show the invalid spec under its own name.
    """

    def __init__(
        self, location: SpecLocation, message: str, *, spec_name: str | None = None
    ) -> None:
        self.location = location
        self.message = message
        self.spec_name = spec_name
        super().__init__(f"{location}: {message}")


class ReferenceError_(ReconcilerError, ValueError):
    """An image reference or digest does not parse."""


class DocumentError(ReconcilerError, ValueError):
    """A manifest, index or image config is malformed or ambiguous."""


class ArchiveError(DocumentError):
    """An archive or a layout is malformed: the message names the file and the member."""


class VerificationError(ReconcilerError):
    """Bytes do not match the digest or size they were announced with."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ResolveError(ReconcilerError):
    """A spec's sources cannot be turned into a desired state."""


class SettingsError(ReconcilerError):
    """The process settings are invalid."""


class PushError(ReconcilerError):
    """Several pushes of one spec failed; the first failure is the cause."""


class TrustError(ReconcilerError):
    """A key, a signature manifest, a signed payload or a trust policy cannot be used. The
    message names where it came from (a file, a spec field, a manifest); it never holds key
    material or a passphrase."""


@dataclass(frozen=True)
class RegistryErrorDetail:
    """One entry of the registry's `errors` array (distribution spec error codes)."""

    code: str
    message: str = ""


class RegistryError(ReconcilerError):
    """A registry request failed. Carries method, URL (never credentials) and status."""

    # Whether the status alone (0 = transport failure, 429, 5xx...) makes it retryable.
    _retry_by_status = True

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        url: str = "",
        status: int = 0,
        errors: Sequence[RegistryErrorDetail] = (),
        retryable: bool | None = None,
        retry_after: float | None = None,
        first_contact_refused: bool = False,
    ) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.errors = tuple(errors)
        if retryable is None:
            retryable = self._retry_by_status and status in RETRYABLE_STATUSES
        self.retryable = retryable
        # Seconds the registry asked us to wait (Retry-After), when it said so.
        self.retry_after = retry_after
        # The connection was refused by a host that has not answered once in this process:
        # most likely nothing listens there (the retry policy may give up early).
        self.first_contact_refused = first_contact_refused
        parts = [message]
        if method or url:
            parts.append(f"({method} {url}".rstrip() + (f" -> {status})" if status else ")"))
        if self.errors:
            parts.append("[" + "; ".join(_format_detail(e) for e in self.errors) + "]")
        super().__init__(" ".join(parts))

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(e.code for e in self.errors)


def _format_detail(detail: RegistryErrorDetail) -> str:
    return f"{detail.code}: {detail.message}" if detail.message else detail.code


class AuthError(RegistryError):
    """The registry refused our credentials, or asked for credentials we do not have."""

    _retry_by_status = False


class NotFoundError(RegistryError):
    """The registry says a manifest or blob that must exist does not."""

    _retry_by_status = False


class BodyError(RegistryError):
    """An answer's body was not read whole: the connection closed before its end, its framing
    broke, or it came too slowly (the request deadline, the blob rate rule). Always retryable:
    the answer may be whole next time. Chained to the transport's error, when there is one."""

    def __init__(self, message: str, *, method: str = "", url: str = "", status: int = 0) -> None:
        super().__init__(message, method=method, url=url, status=status, retryable=True)
