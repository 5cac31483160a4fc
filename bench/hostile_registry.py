"""Each hostile-registry case alone (tests/support/hostileregistry.py): `diff` and `apply` of
one spec whose base the case serves, with the limits tests/test_hostile_registry.py uses; the
wall time, peak RSS and exit of each, as a Markdown table on stdout.

    .venv/bin/python -m bench.hostile_registry [CASE...]
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import textwrap
from pathlib import Path

from devsupport.registry import start_registry
from tests.support.hostile import run_reconciler
from tests.support.hostileregistry import BY_NAME, CASES, LIMITS, HostileRegistry

_PLACE = re.compile(r"^! \S+\.yaml:\d+: [\w.\[\]]+: ")


def main(names: list[str]) -> None:
    cases = [BY_NAME[name] for name in names] if names else CASES
    target = start_registry()
    print("| case | diff s | diff MiB | apply s | apply MiB | apply's message |")
    print("|---|---|---|---|---|---|")
    try:
        for case in cases:
            server = HostileRegistry()
            with tempfile.TemporaryDirectory() as root:
                specs = Path(root, "specs")
                specs.mkdir()
                (specs / "one.yaml").write_text(
                    textwrap.dedent(f"""\
                        apiVersion: reconciler.dev/v1alpha1
                        kind: ImageSpec
                        metadata: {{name: {case.name}}}
                        spec:
                          base: {server.host}/hostile/{case.name}:1
                          targets: [{target.host}/bench-hostile/{case.name}:1]
                        """)
                )
                env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
                env.update(LIMITS, RECONCILER_SPECS_DIR=str(specs),
                           RECONCILER_STATE_DIR=str(Path(root, "state")))  # fmt: skip
                runs = [
                    run_reconciler([command], env=env, cwd=Path(root), timeout=120)
                    for command in ("diff", "apply")
                ]
            server.close()
            said = next((line for line in runs[1].stdout.splitlines() if "!" in line), "")
            # Without the spec's place (its temporary file, line and field), the same each time.
            said = _PLACE.sub("! ", said.strip()).replace("|", "\\|")[:140]
            cells = [f"{run.seconds:.2f} | {run.max_rss_kib >> 10}" for run in runs]
            print(f"| {case.name} | {cells[0]} | {cells[1]} | {said} |", flush=True)
    finally:
        target.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
