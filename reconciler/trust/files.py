"""Small files trust reads whole: keys, policies, attached files."""

from __future__ import annotations

from pathlib import Path

MAX_KEY_FILE = 1024 * 1024


def read_capped(path: Path, limit: int) -> bytes | None:
    """A small file's bytes, or None when it holds more than `limit` bytes: never more than
    `limit` + 1 are read. OSError is the caller's."""
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    return data if len(data) <= limit else None
