"""The one parser for the numbers in an answer's headers: Content-Length, Retry-After,
RateLimit-*. ASCII digits only, at most MAX_DIGITS of them.

Python's `str.isdigit()` and `int()` take far more than HTTP does: `'²'.isdigit()` is true and
`int('²')` raises, `int('١٢')` is 12 (Arabic-Indic digits), `int(' 12_0 ')` is 120. A registry
(or anything between it and us) that sends such a value must get a clear error naming the
header and the value, never an internal error, and never a number HTTP does not mean.
"""

from __future__ import annotations

MAX_DIGITS = 18  # below 2**63: every length, delay and quota real servers send
_DIGITS = frozenset(b"0123456789")


class HeaderNumberError(ValueError):
    """A header that should hold a number and does not; says which and why (value shortened)."""

    def __init__(self, header: str, value: str, why: str) -> None:
        self.header = header
        self.value = value
        self.why = why
        super().__init__(f"{header}: {shown(value)} is {why}")


def shown(value: str, limit: int = 40) -> str:
    """A header's value as an error may show it: repr, shortened (no control characters)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def decimal(text: str | bytes) -> int | None:
    """`text` as a non-negative decimal integer, or None unless it is 1 to MAX_DIGITS ASCII
    digits (no sign, no spaces, no underscores, no other scripts' digits)."""
    data = text.encode("latin-1", "replace") if isinstance(text, str) else text
    if not 0 < len(data) <= MAX_DIGITS or not _DIGITS.issuperset(data):
        return None
    return int(data)


def header_decimal(header: str, value: str) -> int:
    """A header's value (surrounding spaces and tabs allowed) as a number, or
    HeaderNumberError saying what is wrong with it."""
    stripped = value.strip(" \t")
    number = decimal(stripped)
    if number is not None:
        return number
    if not stripped:
        raise HeaderNumberError(header, value, "empty")
    if len(stripped) > MAX_DIGITS and decimal(stripped[:MAX_DIGITS]) is not None:
        raise HeaderNumberError(header, value, f"longer than {MAX_DIGITS} digits")
    raise HeaderNumberError(header, value, "not a number of ASCII digits")
