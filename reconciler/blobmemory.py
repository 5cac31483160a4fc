"""Where blobs were last seen: per registry and digest, the repositories known to hold it.

A blob reconciler pushed, mounted or found in a repository is remembered in the state
directory, so that a later run (another process, another day) that needs the blob in another
repository of the same registry asks the registry to mount it from a known holder instead of
sending its bytes (DESIGN.md section 7). The memory is a hint, never a fact: a mount the
registry refuses (202, an upload opened instead) falls back to sending the bytes, and the holder
is forgotten (`forget`).

The file is small JSON, bounded (the newest `holders_per_blob` repositories per blob, at most
`max_blobs` blobs, the least recently changed dropped first) and holds no credentials: registry
hosts, repository names and digests only. A run records what it learns in a journal and
`save` replays the journal over what the file holds by then, so that concurrent processes
rarely lose each other's entries (the last writer wins when they race); the write is atomic, so
a reader never sees a torn file. A damaged file is ignored with a warning, and rebuilt.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import ReferenceError_
from reconciler.fileio import write_atomic
from reconciler.oci.digest import Digest
from reconciler.oci.reference import parse_repository

log = logging.getLogger("reconciler.blobmemory")

FILE_NAME = "blob-locations.json"
VERSION = 1
HOLDERS_PER_BLOB = 4
MAX_BLOBS = 20_000


class DamagedMemory(ValueError):
    """The file does not hold what `save` writes."""


@dataclass
class _Entry:
    changed: float
    repositories: list[str] = field(default_factory=list)  # newest first


# registry host -> digest -> entry
_Table = dict[str, dict[str, _Entry]]
_Change = Callable[[_Table], None]


class BlobMemory:
    """The blob-location memory of one state directory, loaded on first use."""

    def __init__(
        self,
        path: Path,
        *,
        holders_per_blob: int = HOLDERS_PER_BLOB,
        max_blobs: int = MAX_BLOBS,
    ) -> None:
        self.path = path
        self.holders_per_blob = holders_per_blob
        self.max_blobs = max_blobs
        self._table: _Table | None = None
        self._journal: list[_Change] = []

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> BlobMemory:
        return cls(state_dir / FILE_NAME)

    def holders(self, registry: str, digest: Digest) -> tuple[str, ...]:
        """The repositories of `registry` known to hold `digest`, newest first."""
        entry = self._loaded().get(registry, {}).get(str(digest))
        return tuple(entry.repositories) if entry is not None else ()

    def remember(self, registry: str, repository: str, digest: Digest) -> None:
        """`repository` of `registry` holds `digest` (pushed, mounted or seen there)."""
        if repository in self.holders(registry, digest):
            return  # known already: its place in the list stays (no churn on every pass)
        key, now = str(digest), time.time()

        def change(table: _Table) -> None:
            blobs = table.setdefault(registry, {})
            entry = blobs.setdefault(key, _Entry(now))
            if repository not in entry.repositories:
                entry.repositories.insert(0, repository)
                del entry.repositories[self.holders_per_blob :]
                entry.changed = now

        self._apply(change)

    def forget(self, registry: str, repository: str, digest: Digest) -> None:
        """`repository` does not hold `digest` after all (a refused mount)."""
        if repository not in self.holders(registry, digest):
            return
        key = str(digest)

        def change(table: _Table) -> None:
            blobs = table.get(registry, {})
            entry = blobs.get(key)
            if entry is not None and repository in entry.repositories:
                entry.repositories.remove(repository)
                if not entry.repositories:
                    del blobs[key]
                if not blobs:
                    table.pop(registry, None)

        self._apply(change)

    @property
    def unsaved(self) -> bool:
        return bool(self._journal)

    def save(self) -> None:
        """Replay this run's changes over the file as it is now, and write it atomically."""
        if not self._journal:
            return
        table = self._read()
        for change in self._journal:
            change(table)
        self._journal.clear()
        self._trim(table)
        self._table = table
        try:
            write_atomic(self.path, _dump(table))
        except OSError as exc:
            log.warning("cannot write the blob-location memory %s: %s", self.path, exc)

    def _apply(self, change: _Change) -> None:
        change(self._loaded())
        self._journal.append(change)

    def _loaded(self) -> _Table:
        if self._table is None:
            self._table = self._read()
        return self._table

    def _read(self) -> _Table:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("cannot read the blob-location memory %s (%s); ignored", self.path, exc)
            return {}
        try:
            return _load(raw)
        except DamagedMemory as exc:
            log.warning(
                "the blob-location memory %s is damaged (%s); ignored, and rebuilt", self.path, exc
            )
            return {}

    def _trim(self, table: _Table) -> None:
        entries = [
            (e.changed, host, key) for host, blobs in table.items() for key, e in blobs.items()
        ]
        if len(entries) <= self.max_blobs:
            return
        entries.sort()
        for _, host, key in entries[: len(entries) - self.max_blobs]:
            del table[host][key]
            if not table[host]:
                del table[host]


def _dump(table: _Table) -> bytes:
    registries = {
        host: {
            key: {"changed": round(e.changed, 3), "repositories": e.repositories}
            for key, e in sorted(blobs.items())
        }
        for host, blobs in sorted(table.items())
    }
    return json.dumps({"version": VERSION, "registries": registries}, indent=0).encode()


def _load(raw: bytes) -> _Table:
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamagedMemory(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise DamagedMemory(f"not a version {VERSION} document")
    registries = data.get("registries")
    if not isinstance(registries, dict):
        raise DamagedMemory("no 'registries' object")
    table: _Table = {}
    for host, blobs in registries.items():
        if not isinstance(blobs, dict):
            raise DamagedMemory(f"registry {host!r} is not an object")
        table[host] = {key: _entry(host, key, value) for key, value in blobs.items()}
    return table


def _entry(host: str, key: str, value: Any) -> _Entry:
    what = f"entry {host} {key[:19]}"
    if not isinstance(value, dict):
        raise DamagedMemory(f"{what}: not an object")
    changed, repositories = value.get("changed"), value.get("repositories")
    if not isinstance(changed, (int, float)) or not isinstance(repositories, list):
        raise DamagedMemory(f"{what}: no 'changed' time or 'repositories' list")
    if not all(isinstance(r, str) for r in repositories):
        raise DamagedMemory(f"{what}: a repository that is not a string")
    try:
        Digest.parse(key)
        for repository in repositories:
            parse_repository(host, repository)
    except ReferenceError_ as exc:
        raise DamagedMemory(f"{what}: {exc}") from None
    return _Entry(float(changed), list(repositories))
