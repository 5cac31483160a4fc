"""The one state enum (DESIGN.md section 6: one of each) of a spec, as reports and `/status`
name it.

A pass of the engine ends a spec in Synced, OutOfSync (planned, not applied), Failed or Invalid.
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
