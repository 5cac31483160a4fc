"""Pruning: only tags this reconciler wrote, and only while they still name what it wrote.

`WrittenTags` records, in the state directory, every tag the daemon pushed and the digest it
pushed there. When a spec is deleted and `prune` is on, each of its recorded tags is checked:
if someone has since moved it, it is left alone. Otherwise the tag is deleted (`DELETE` by tag,
OCI distribution 1.1). Registries that only delete by digest (distribution 2.x) delete every
tag naming that manifest, so the manifest is deleted only when every tag naming it in that
repository is one this spec wrote; else the tag stays, and the status says why.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.fileio import write_atomic
from reconciler.oci.location import Address, parse_target
from reconciler.store.base import TagDeleter
from reconciler.store.open import Stores

log = logging.getLogger("reconciler.prune")


class WrittenTags:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._tags: dict[str, dict[str, str]] = {}
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self._tags = {
                    k: v for k, v in loaded.items() if isinstance(v, dict) and "digest" in v
                }
        except (OSError, ValueError):
            pass  # a missing or damaged record only means nothing is pruned

    def add(self, spec: str, tags: list[tuple[str, str]]) -> None:
        if not tags:
            return
        for target, digest in tags:
            self._tags[target] = {"spec": spec, "digest": digest}
        self._save()

    def of(self, spec: str) -> dict[str, str]:
        return {t: v["digest"] for t, v in self._tags.items() if v.get("spec") == spec}

    def forget(self, target: str) -> None:
        self._tags.pop(target, None)
        self._save()

    def _save(self) -> None:
        data = json.dumps(self._tags, indent=1, sort_keys=True).encode()
        write_atomic(self.path, data)


class Pruner:
    def __init__(self, stores: Stores, written: WrittenTags) -> None:
        self.stores = stores
        self.written = written

    async def prune(self, spec: str) -> str:
        mine = self.written.of(spec)
        deleted, kept = [], []
        for target, digest in sorted(mine.items()):
            try:
                outcome = await self._prune_one(target, digest, set(mine))
            except ReconcilerError as exc:
                outcome = f"error: {exc}"
            if outcome == "deleted":
                deleted.append(target)
                self.written.forget(target)
            else:
                kept.append(f"{target} ({outcome})")
            log.info("prune %s: %s", target, outcome)
        message = f"spec deleted; pruned {len(deleted)} tag(s)"
        return message + (f"; kept {', '.join(kept)}" if kept else "")

    async def _prune_one(self, target: str, digest: str, ours: set[str]) -> str:
        # Recorded targets are absolute already (a local store's path too): no base applies.
        address = parse_target(target, Path("/"))
        store = self.stores.reader(address.location)
        if not isinstance(store, TagDeleter):
            return "its store cannot delete tags; left alone"
        head = await store.head_manifest(address.identifier)
        if head is None:
            return "deleted"
        if str(head.digest) != digest:
            return "moved by someone else"
        status = await store.delete_manifest(address.identifier)
        if status in (200, 202, 204, 404):
            return "deleted"
        # Delete by tag is not supported here: delete by digest only if every tag on it is ours.
        for tag in await store.list_tags():
            other = str(Address(address.location, tag))
            if other in ours:
                continue
            found = await store.head_manifest(tag)
            if found is not None and str(found.digest) == digest:
                return f"manifest also tagged {tag}"
        status = await store.delete_manifest(digest)
        return "deleted" if status in (200, 202, 204, 404) else f"registry answered {status}"
