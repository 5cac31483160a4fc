"""The benchmark, reconciler against skopeo: `python -m bench` (see bench/__main__.py).

Modules by role: harness (processes, timing, peak RSS, request counts, alternation), fixtures
(registries of its own, images built offline, spec files), scenarios (one function each,
registered by name), report (the table, the machine, docs/performance.md).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
