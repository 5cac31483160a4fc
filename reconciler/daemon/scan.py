"""One read of the specs directory, as a value: this replica's specs (by shard) with their
fingerprints, and the files that do not parse.

`scan_specs` reads and parses files, so the daemon runs it in a worker thread
(`asyncio.to_thread`): a directory of a thousand specs must not stall `/healthz`, the backoff
timers or the registry requests of a pass in flight.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import SpecError
from reconciler.lockfile import LockFile, LockSet
from reconciler.model.fanout import instance_base
from reconciler.spec import LoadedSpec, load_specs


def shard_of(name: str, shards: int) -> int:
    """A stable hash of the spec's name (the same on every replica and every run)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % shards


def fingerprint(spec: LoadedSpec, locks: LockSet | None = None) -> str:
    """What the spec asks for; moving it to another file or line changes nothing. With locks
    (base_policy locked), its base's lock entry is part of it: a lock updated in git is a
    change of the spec, and runs it."""
    text = spec.body.model_dump_json()
    if locks is not None:
        try:
            lock = locks.for_spec(spec.file)
        except SpecError as exc:
            text += f"\0lock error: {exc}"
        else:
            text += f"\0lock: {_locked(spec, lock)}"
    return hashlib.sha256(text.encode()).hexdigest()


def _locked(spec: LoadedSpec, lock: LockFile | None) -> str:
    """What the lock says of a spec: its base's digest, or a fan-out's tags and their digests."""
    if lock is None:
        return "none"
    if not spec.body.fans_out:
        entry = lock.get(spec.body.base)
        return str(entry.digest) if entry is not None else "none"
    selection = lock.selection(spec.name)
    tags = selection.tags if selection is not None else ()
    entries = (lock.get(instance_base(spec.body.base, tag)) for tag in tags)
    return " ".join(f"{t}={e.digest if e else None}" for t, e in zip(tags, entries, strict=True))


@dataclass(frozen=True)
class ScannedSpec:
    spec: LoadedSpec
    fingerprint: str
    locked: bool = False  # a lock file covers it (and the daemon reads locks)


@dataclass(frozen=True)
class Scan:
    specs: tuple[ScannedSpec, ...]  # this shard's only
    errors: tuple[SpecError, ...]  # every file's, whatever shard its specs would be in

    @property
    def bad_files(self) -> dict[str, SpecError]:
        return {e.location.file: e for e in self.errors}


def scan_specs(specs_dir: Path, shard: int, shards: int, locked: bool = False) -> Scan:
    loaded = load_specs([specs_dir])
    locks = LockSet() if locked else None
    mine = tuple(
        ScannedSpec(spec, fingerprint(spec, locks), _covered(spec, locks))
        for spec in loaded.specs
        if shard_of(spec.name, shards) == shard
    )
    return Scan(mine, loaded.errors)


def _covered(spec: LoadedSpec, locks: LockSet | None) -> bool:
    if locks is None:
        return False
    try:
        return locks.for_spec(spec.file) is not None
    except SpecError:  # a lock that does not parse: the spec fails on it, as a locked one
        return True
