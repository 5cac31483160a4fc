"""What the bench reports: the table of rows, the machine it ran on, and docs/performance.md."""

from __future__ import annotations

import os
import platform
import subprocess
import textwrap
import time
from pathlib import Path

from bench.harness import Row


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next(
        x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")
    )
    skopeo = subprocess.run(
        ["skopeo", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    registry = subprocess.run(
        ["docker-registry", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return (
        f"{os.cpu_count()} x {cpu}, {int(mem.split()[1]) // 1024} MiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}, {skopeo}, "
        f"{registry or 'docker-registry'} on loopback (plain HTTP, filesystem storage)"
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| scenario | tool | median wall | peak RSS | requests | reconciler/skopeo | notes |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    by_scenario: dict[str, dict[str, Row]] = {}
    for row in rows:
        by_scenario.setdefault(row.scenario, {})[row.tool] = row
    for row in rows:
        pair = by_scenario[row.scenario]
        ratio = ""
        if row.tool == "reconciler" and "skopeo" in pair:
            ratio = f"{row.wall / pair['skopeo'].wall:.2f}x wall"
        rss = f"{row.rss_mib:.0f} MiB" if row.rss_mib else "-"
        requests = (
            str(row.requests)
            if row.samples[0].requests or row.tool in ("reconciler", "skopeo")
            else "-"
        )
        cells = [row.scenario, row.tool, f"{row.wall:.2f} s", rss, requests, ratio, row.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_doc(path: Path, text: str, facts: list[str], runs: int, took: float) -> None:
    header = textwrap.dedent(
        f"""\
        # Performance

        Written by `bench/run` (`python -m bench`) on {time.strftime("%Y-%m-%d")}, in one run of
        {took / 60:.0f} minutes. Do not edit by hand: run the bench again.

        Machine: {machine()}.

        Each scenario ran reconciler and skopeo in alternation, {runs} times each, as real
        processes. Wall time is the median of the runs; peak RSS is the largest maximum
        resident set size the kernel reported (GNU time); requests are counted from the two
        registries' access logs, median per run. Images are built offline by the bench (layers
        half random, half zeros: gzip halves them, as it does typical layers) and seeded with
        skopeo.

        """
    )
    body = header + text + "\n\n" + "".join(f"- {fact}\n" for fact in facts)
    path.write_text(body)
