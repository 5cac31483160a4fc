"""Small files trust reads whole: keys, passphrases, policies, attached files."""

from __future__ import annotations

from pathlib import Path

from reconciler.errors import TrustError

MAX_KEY_FILE = 1024 * 1024


def read_small_file(path: Path, limit: int, where: str, what: str) -> bytes:
    """A small file's bytes; never more than `limit` + 1 are read. A file that cannot be read,
    or holds more, is a TrustError naming `where` and `what` the file was to be."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise TrustError(f"{where}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise TrustError(f"{where}: {what} is over {limit} bytes")
    return data
