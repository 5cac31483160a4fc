"""`reconciler lock`: pin every tag the specs resolve to a digest, in one lock file per
directory: base tags, the tags of layers' `image:` references, fan-out selections.

- `lock` writes what is missing (a base tag no entry covers: resolved now) and drops entries no
  spec uses; an entry already there stays as it is, so running it twice changes nothing and
  asks no registry about tags that are locked.
- `lock --check` asks each locked tag what it names now and says what moved, what is missing
  and what is unused: the lock is stale if any (exit 2). It writes nothing.
- `lock --update [NAME...]` moves entries to what their tags name now: every entry, or those of
  the named specs or base references.
Bases by digest need no entry (the spec pins them), nor do `oci:` and `docker-archive:` bases
(their content is in the repository).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from reconciler.errors import ReconcilerError, SpecError
from reconciler.lockfile import LockedBase, LockedSelection, LockSet, lock_path, write_lock
from reconciler.model.fanout import instances
from reconciler.oci.digest import Digest
from reconciler.oci.document import IndexDocument
from reconciler.oci.location import Address
from reconciler.oci.platform import UNKNOWN_PLATFORM
from reconciler.resolve import Resolver
from reconciler.spec import LoadedSpec


class LockMode(StrEnum):
    WRITE = "write"
    CHECK = "check"
    UPDATE = "update"


class Change(StrEnum):
    ADDED = "added"  # no entry covered this base tag; locked now
    MOVED = "moved"  # the tag names another digest than the lock says
    MISSING = "missing"  # --check: no entry covers this base tag
    UNUSED = "unused"  # an entry no spec uses (dropped when written)
    SELECTED = "selected"  # a fan-out spec selects other tags than the lock says


@dataclass(frozen=True)
class LockChange:
    lock: Path
    reference: str
    change: Change
    old: Digest | None = None
    new: Digest | None = None
    platforms: tuple[str, ...] = ()  # added: the platforms the base holds
    tags: tuple[str, ...] = ()  # selected: the tags a fan-out selects now
    was: tuple[str, ...] | None = None  # selected: the tags the lock had (None: none)
    also: tuple[str, ...] = ()  # moved by --update NAME: the other specs the entry serves


@dataclass(frozen=True)
class LockReport:
    changes: tuple[LockChange, ...]
    errors: tuple[str, ...]
    written: tuple[Path, ...]
    locks: int  # lock files considered
    entries: int  # entries they hold (after writing)

    @property
    def stale(self) -> bool:
        return bool(self.changes)


def layer_tags(spec: LoadedSpec) -> list[tuple[int, str, Address]]:
    """A spec's layers whose `image:` is a registry tag: (index, reference, address)."""
    found = []
    for index, layer in enumerate(spec.body.layers):
        image = layer.image
        if image is not None and image.digest is None and image.tag is not None:
            found.append((index, str(image), Address.of(image)))
    return found


def _tag_bases(specs: Iterable[LoadedSpec]) -> dict[Path, dict[str, list[LoadedSpec]]]:
    """Per lock file: the tags its specs resolve (base tags as written, layers' image tags),
    and the specs naming each."""
    groups: dict[Path, dict[str, list[LoadedSpec]]] = {}
    for spec in specs:
        group = groups.setdefault(lock_path(spec.file), {})
        if spec.base_tag() is not None:
            group.setdefault(spec.body.base, []).append(spec)
        for _index, reference, _address in layer_tags(spec):
            users = group.setdefault(reference, [])
            if spec not in users:
                users.append(spec)
    return {path: group for path, group in groups.items() if group}


def _tag_of(reference: str, spec: LoadedSpec) -> tuple[Address, tuple[str | int, ...]]:
    """Where `reference` is in `spec`: its address, and the field that names it."""
    if spec.body.base == reference:
        address = spec.base_tag()
        assert address is not None  # noqa: S101 - _tag_bases kept tags only
        return address, ("base",)
    for index, named, address in layer_tags(spec):
        if named == reference:
            return address, ("layers", index, "image")
    raise AssertionError(reference)  # pragma: no cover - _tag_bases named it from the spec


class Locker:
    """Resolves base tags for lock files; one per command, sharing one resolver's requests."""

    def __init__(self, resolver: Resolver, *, complete: bool = True) -> None:
        self.resolver = resolver
        self.locks = LockSet()  # each lock file read once, whatever the number of specs
        # False when the run saw only part of the specs (some files named, some invalid):
        # entries it did not see are kept, never dropped as unused.
        self.complete = complete

    async def run(
        self, specs: Iterable[LoadedSpec], mode: LockMode, names: Collection[str] = ()
    ) -> LockReport:
        plain: list[LoadedSpec] = []
        fan_outs: list[LoadedSpec] = []
        held: dict[Path, set[str]] = {}  # suspended specs: their entries stay as they are
        for spec in specs:
            if spec.body.suspend:
                held.setdefault(lock_path(spec.file), set()).update((spec.name, spec.body.base))
            else:
                (fan_outs if spec.body.fans_out else plain).append(spec)
        chosen = await asyncio.gather(*(self._select(s, mode, names) for s in fan_outs))
        selections: dict[Path, list[LockedSelection]] = {}
        changes: list[LockChange] = []
        errors: list[str] = []
        for spec, (selection, change, error) in zip(fan_outs, chosen, strict=True):
            changes += [change] if change is not None else []
            errors += [error] if error is not None else []
            if selection is None:
                continue
            selections.setdefault(lock_path(spec.file), []).append(selection)
            try:
                plain += instances(spec, selection.tags)
            except ReconcilerError as exc:  # a rendered target that is no valid tag
                errors.append(f"{spec.location(('targets',))}: {exc}")
        groups = _tag_bases(plain)
        for path in [*selections, *held]:
            groups.setdefault(path, {})
        outcomes = await asyncio.gather(
            *(
                self._one(path, bases, mode, names, tuple(selections.get(path, ())), held.get(path))
                for path, bases in sorted(groups.items())
            )
        )
        changes += [c for o in outcomes for c in o[0]]
        errors += [e for o in outcomes for e in o[1]]
        written = tuple(path for o, path in zip(outcomes, sorted(groups), strict=True) if o[2])
        entries = sum(o[3] for o in outcomes)
        return LockReport(tuple(changes), tuple(errors), written, len(groups), entries)

    async def _select(
        self, spec: LoadedSpec, mode: LockMode, names: Collection[str]
    ) -> tuple[LockedSelection | None, LockChange | None, str | None]:
        """A fan-out spec's selection: kept from the lock, or listed now (new, --check, and
        --update of it); and the change that is, if any."""
        path = lock_path(spec.file)
        try:
            existing = self.locks.at(path)
        except SpecError as exc:
            return None, None, str(exc)
        old = existing.selection(spec.name) if existing is not None else None
        listing = old is None or mode is LockMode.CHECK
        listing = listing or (mode is LockMode.UPDATE and (not names or spec.name in names))
        if not listing:
            return old, None, None
        try:
            tags = await self.resolver.select_tags(spec)
        except ReconcilerError as exc:
            return old, None, str(exc)
        if not tags:
            where = spec.location(("baseTags",))
            return old, None, f"{where}: no tag of {spec.body.base} is selected"
        if old is not None and old.tags == tags:
            return old, None, None
        change = LockChange(
            path,
            f"{spec.name}: fan-out over {spec.body.base}",
            Change.SELECTED,
            tags=tags,
            was=old.tags if old is not None else None,
        )
        keep = old if mode is LockMode.CHECK and old is not None else None
        return keep or LockedSelection(spec.name, tags), change, None

    async def _one(
        self,
        path: Path,
        bases: dict[str, list[LoadedSpec]],
        mode: LockMode,
        names: Collection[str],
        selections: tuple[LockedSelection, ...] = (),
        held: set[str] | None = None,
    ) -> tuple[list[LockChange], list[str], bool, int]:
        try:
            existing = self.locks.at(path)
        except SpecError as exc:
            return [], [str(exc)], False, 0
        old = {b.reference: b for b in existing.bases} if existing else {}
        held = held or set()
        unseen = sorted(set(old) - set(bases))
        stays = [r for r in unseen if not self.complete or _held(r, held)]
        changes: list[LockChange] = [
            LockChange(path, ref, Change.UNUSED, old[ref].digest)
            for ref in unseen
            if ref not in stays
        ]
        errors: list[str] = []
        kept: list[LockedBase] = [old[r] for r in stays]
        for reference, users in sorted(bases.items()):
            entry = old.get(reference)
            ask = (
                entry is None
                or mode is LockMode.CHECK
                or (mode is LockMode.UPDATE and _named(reference, users, names))
            )
            if not ask:
                kept.append(entry)  # type: ignore[arg-type]  # ask is False only with an entry
                continue
            try:
                fresh = await self._resolve(reference, users[0])
            except ReconcilerError as exc:
                errors.append(f"{users[0].location(_tag_of(reference, users[0])[1])}: {exc}")
                if entry is not None:
                    kept.append(entry)
                continue
            if entry is None:
                change = Change.MISSING if mode is LockMode.CHECK else Change.ADDED
                changes.append(
                    LockChange(path, reference, change, None, fresh.digest, fresh.platforms)
                )
                kept.append(fresh)
            elif entry.digest != fresh.digest:
                also = tuple(sorted({u.name for u in users if names and u.name not in names}))
                changes.append(
                    LockChange(path, reference, Change.MOVED, entry.digest, fresh.digest, also=also)
                )
                kept.append(fresh if mode is LockMode.UPDATE else entry)
            else:
                kept.append(entry)  # unchanged: keep when it was resolved, for a stable file
        wanted = {s.spec for s in selections}
        others = [f for f in (existing.fan_out if existing else ()) if f.spec not in wanted]
        carried = tuple(f for f in others if not self.complete or f.spec in held)
        changes += [
            LockChange(path, f"{f.spec}: fan-out", Change.UNUSED)
            for f in others
            if f not in carried
        ]
        wrote = False
        if mode is not LockMode.CHECK and not errors:
            wrote = write_lock(path, tuple(kept), (*selections, *carried))
        return changes, errors, wrote, len(kept)

    async def _resolve(self, reference: str, spec: LoadedSpec) -> LockedBase:
        address, _field = _tag_of(reference, spec)
        head = await self.resolver.resolve_tag(address)
        root = await self.resolver.fetch_document(address.location, head.digest)
        if isinstance(root, IndexDocument):
            platforms = sorted(
                {str(e.platform) for e in root.index.manifests if e.platform is not None}
                - {str(UNKNOWN_PLATFORM)}
            )
        else:
            config = await self.resolver.fetch_config(address.location, root.manifest.config)
            cfg = config.config
            platforms = [
                f"{cfg.os}/{cfg.architecture}" + (f"/{cfg.variant}" if cfg.variant else "")
            ]
        resolved = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return LockedBase(reference, head.digest, root.media_type, tuple(platforms), resolved)


def _held(reference: str, held: set[str]) -> bool:
    """An entry of a suspended spec: its base, or a tag of the base it fans out over."""
    return reference in held or reference.rpartition(":")[0] in held


def _named(reference: str, users: list[LoadedSpec], names: Collection[str]) -> bool:
    """--update without names moves every entry; with names, those of the named specs or
    references."""
    return not names or reference in names or any(spec.name in names for spec in users)


_SIGNS = {
    Change.ADDED: "+",
    Change.MOVED: "~",
    Change.MISSING: "!",
    Change.UNUSED: "-",
    Change.SELECTED: "~",
}


def describe(report: LockReport, mode: LockMode, root: Path | None = None) -> list[str]:
    """The lines `reconciler lock` prints: one per change, then a total."""

    def where(path: Path) -> str:
        if root is not None and path.is_relative_to(root):
            return str(path.relative_to(root))
        return str(path)

    lines = []
    for c in report.changes:
        sign = _SIGNS[c.change]
        if c.change is Change.MOVED:
            assert c.old is not None and c.new is not None  # noqa: S101 - a move has both
            text = f"{c.reference} moved: {c.old.short} -> {c.new.short}"
            if mode is LockMode.CHECK:
                text += " (not updated: run `reconciler lock --update`)"
            elif c.also:
                text += f" (shared: this moves {', '.join(c.also)} too)"
        elif c.change is Change.SELECTED:
            now = ", ".join(c.tags) or "no tag"
            text = f"{c.reference} selects {now}"
            if c.was is not None:
                text += f" (locked: {', '.join(c.was) or 'no tag'})"
        elif c.change is Change.UNUSED:
            text = f"{c.reference}: no spec uses it" + (
                "; dropped" if mode is not LockMode.CHECK else ""
            )
        else:
            assert c.new is not None  # noqa: S101 - added and missing carry what the tag names
            platforms = f" ({', '.join(c.platforms)})" if c.platforms else ""
            verb = "not in the lock" if c.change is Change.MISSING else "locked"
            text = f"{c.reference} {verb}: {c.new.short}{platforms}"
        lines.append(f"{where(c.lock)}: {sign} {text}")
    lines += [f"error: {e}" for e in report.errors]
    counts = {kind: sum(1 for c in report.changes if c.change is kind) for kind in Change}
    parts = [f"{n} {kind}" for kind, n in counts.items() if n]
    failed = len(report.errors)
    parts += [f"{failed} error{'s' if failed != 1 else ''}"] if failed else []
    summary = ", ".join(parts) or "no change"
    files = f"{report.locks} lock file{'s' if report.locks != 1 else ''}"
    files = f"{report.entries} {'entry' if report.entries == 1 else 'entries'} in {files}"
    if mode is LockMode.CHECK:
        verdict = "stale" if report.stale else "not checked whole" if failed else "up to date"
        lines.append(f"Lock {verdict}: {summary}; {files}.")
        return lines
    wrote = ", ".join(where(p) for p in report.written)
    if failed:  # a lock file with an error in it is left as it was
        wrote = (
            wrote + "; " if wrote else "nothing; "
        ) + "a lock file with an error is left as it was"
    lines.append(f"Lock: {summary}; {files}; wrote {wrote or 'nothing (already as it should be)'}.")
    return lines
