"""Figures for docs/reliability.md: tests append JSON lines when RECONCILER_REPORT_DIR is set
(scripts/reliability sets it, runs the tests, then renders the page from what they wrote)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def record(section: str, **fields: Any) -> None:
    directory = os.environ.get("RECONCILER_REPORT_DIR")
    if not directory:
        return
    path = Path(directory) / f"{section}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(fields, sort_keys=True) + "\n")
