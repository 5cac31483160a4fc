"""`--only sizing`: the daemon's memory against the number of specs, for the Helm chart's
requests and limits (docs/performance.md, "Sizing").

One seeding apply of 10,000 specs (20,000 tags over 10 base tags), then a daemon's first full
pass over the first 1,000, 2,500, 5,000 and 10,000 of them, and over all 10,000 as one shard of
three: its peak RSS (VmHWM) once ready. A straight line through the points gives the fixed
cost and the cost per 10,000 specs.
"""

from __future__ import annotations

import shutil

from bench.harness import Bench, run_process
from bench.scale import MiB_KIB, daemon_pass
from bench.scenarios import noop_specs, scenario

COUNTS = (1_000, 2_500, 5_000, 10_000)


@scenario("sizing", slow=True)
def sizing(bench: Bench) -> None:
    counts = (100, 250, 500, 1_000) if bench.quick else COUNTS
    specs = noop_specs(bench, counts[-1], 10)
    state = bench.fresh("state")
    run_process(bench.rc("apply", str(specs)), bench.rc_env(state, specs), bench.log)
    files = sorted(specs.iterdir(), key=lambda p: p.name)
    points: list[tuple[int, float]] = []
    for count in counts:
        subset = bench.fresh(f"specs-{count}")
        for path in files[:count]:
            shutil.copy(path, subset / path.name)
        sample = daemon_pass(bench, subset, state)
        points.append((count, sample.rss_kib / MiB_KIB))
    shard = daemon_pass(bench, specs, state, RECONCILER_SHARD="0/3")
    bench.rows[-1].scenario += " as shard 0/3"
    slope, fixed = _line(points)
    per = slope * 10_000
    bench.facts.append(
        "sizing: daemon peak RSS "
        + ", ".join(f"{c:,} specs {m:.0f} MiB" for c, m in points)
        + f"; {counts[-1]:,} specs as shard 0/3 {shard.rss_kib / MiB_KIB:.0f} MiB; "
        f"a line through them: {fixed:.0f} MiB + {per:.0f} MiB per 10,000 specs"
    )


def _line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares: (slope, intercept)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return slope, my - slope * mx
