"""The state directory's cache of immutable facts, keyed by digest.

Manifests, indexes and configs are stored as their exact bytes (re-verified on every read, so a
corrupt entry is a miss, never a wrong answer). Layer facts (size, compression, diff_id) are
small JSON records. Facts (a signature verified, a target signed) are empty files named by the
digest of what they depend on. Every write goes to a temporary file and is renamed into place, so
concurrent runs and killed runs never leave a half-written entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import ReferenceError_
from reconciler.fileio import write_atomic
from reconciler.oci.digest import Digest
from reconciler.oci.mediatypes import Compression


@dataclass(frozen=True)
class LayerFacts:
    """What is intrinsic to a layer blob's digest."""

    size: int
    compression: Compression | None = None
    diff_id: Digest | None = None


class ContentCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, kind: str, digest: Digest, suffix: str = "") -> Path:
        return self.root / kind / digest.algorithm / f"{digest.hex}{suffix}"

    def get_document(self, digest: Digest) -> tuple[bytes, str] | None:
        """(raw bytes, media type) of a manifest, index or config, if cached and intact."""
        path = self._path("documents", digest)
        try:
            raw = path.read_bytes()
            media_type = self._path("documents", digest, ".type").read_text(encoding="utf-8")
        except OSError:
            return None
        if Digest.of(raw, digest.algorithm) != digest:
            path.unlink(missing_ok=True)
            return None
        return raw, media_type

    def put_document(self, digest: Digest, raw: bytes, media_type: str) -> None:
        self._write(self._path("documents", digest, ".type"), media_type.encode())
        self._write(self._path("documents", digest), raw)

    def get_layer(self, digest: Digest) -> LayerFacts | None:
        try:
            data = json.loads(self._path("layers", digest, ".json").read_text(encoding="utf-8"))
            return LayerFacts(
                size=int(data["size"]),
                compression=Compression(data["compression"]) if data.get("compression") else None,
                diff_id=Digest.parse(data["diffID"]) if data.get("diffID") else None,
            )
        except (OSError, ValueError, KeyError, TypeError, ReferenceError_):
            return None

    def put_layer(self, digest: Digest, facts: LayerFacts) -> None:
        record = {
            "size": facts.size,
            "compression": facts.compression.value if facts.compression else None,
            "diffID": str(facts.diff_id) if facts.diff_id else None,
        }
        self._write(self._path("layers", digest, ".json"), json.dumps(record).encode())

    def has_fact(self, kind: str, key: str) -> bool:
        """Whether a fact (a verified signature, a signed target) was recorded: `key` is a hex
        digest of everything the fact depends on, so a recorded one never goes stale."""
        return (self.root / "facts" / kind / key).is_file()

    def put_fact(self, kind: str, key: str) -> None:
        if not key.isalnum():
            raise ValueError(f"fact key {key!r} is not a hex digest")
        self._write(self.root / "facts" / kind / key, b"")

    def _write(self, path: Path, data: bytes) -> None:
        write_atomic(path, data)
