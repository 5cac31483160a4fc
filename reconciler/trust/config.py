"""Where a run's trust policy and signing key come from (settings or a spec), as plain facts:
paths and names, never a secret's value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler.trust.policy import TrustPolicy


@dataclass(frozen=True)
class PolicySource:
    """A policy and the directory its relative key paths are read from."""

    policy: TrustPolicy
    directory: Path
    origin: str  # "settings trust_policy" or "specs/a.yaml: trust", for messages


@dataclass(frozen=True)
class KeySource:
    """Where a signing key and its passphrase are read from."""

    key_file: Path
    passphrase_file: Path | None = None
    passphrase_env: str | None = None
    recursive: bool = True  # sign an index's child manifests too
