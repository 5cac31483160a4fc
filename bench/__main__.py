"""`python -m bench`: reconciler against skopeo, side by side, on registries of its own.

Each scenario runs reconciler and skopeo (Debian's) in alternation, `--runs` times each, as
real processes. Wall time is the median; peak RSS is the largest maximum resident set size the
kernel reports for the process (GNU time); requests are counted from the registries' own access
logs. The table is printed and, unless --quick, written to docs/performance.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import ROOT
from bench.harness import PYTHON, Bench
from bench.report import table, write_doc
from bench.scale import scale as _scale  # noqa: F401 - registers the slow `scale` scenario
from bench.scenarios import SCENARIOS, SLOW
from bench.sizing import sizing as _sizing  # noqa: F401 - registers the slow `sizing` scenario
from bench.slow_layer import slow_layer as _slow_layer  # noqa: F401 - and `slow-layer`, `slow-link`


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and scenario")
    parser.add_argument("--quick", action="store_true", help="small sizes; docs not written")
    parser.add_argument("--only", action="append", choices=list(SCENARIOS), help="repeatable")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument(
        "--scale", action="store_true", help="also the 10,000-spec scenario (minutes)"
    )
    args = parser.parse_args(argv)
    for tool in ("skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is not installed; run scripts/setup")
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "reconciler")], check=True)
    work = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    bench = Bench(work, args.runs, args.quick)
    started = time.perf_counter()
    try:
        chosen = args.only or [n for n in SCENARIOS if n not in SLOW or args.scale]
        for name in chosen:
            print(f"== {name}", file=sys.stderr)
            SCENARIOS[name](bench)
    finally:
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
    took = time.perf_counter() - started
    text = table(bench.rows)
    print(text)
    for fact in bench.facts:
        print(f"- {fact}")
    if not args.quick and not args.only:
        write_doc(args.output, text, bench.facts, args.runs, took)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
