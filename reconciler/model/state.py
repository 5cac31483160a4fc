"""The one state enum (DESIGN.md section 6: one of each) of a spec, as reports and `/status`
name it.

A pass of the engine ends a spec in Synced, OutOfSync (planned, not applied), Failed, Invalid,
Suspended (`suspend: true`: validated, never pushed) or BaseMoved (in sync with its lock file,
while the locked base tag now names another digest: reported, not rebuilt).
The daemon adds the two states that only exist between passes: Progressing (a reconcile is in
flight) and Orphaned (its file is gone; its tags are left alone unless prune is on). The values
are the wire names of `/status`, the `reconciler_specs` metric's label and the CLI's reports.
"""

from __future__ import annotations

from enum import StrEnum


class SpecState(StrEnum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    PROGRESSING = "Progressing"
    FAILED = "Failed"
    INVALID = "Invalid"
    ORPHANED = "Orphaned"
    SUSPENDED = "Suspended"  # `suspend: true`: validated, never resolved or pushed
    BASE_MOVED = "BaseMoved"  # in sync with its lock, but the locked base tag names a new digest
