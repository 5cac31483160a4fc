"""Running and measuring: real processes, wall time, peak RSS through GNU time, requests counted
from the registries' access logs, and reconciler and skopeo run in alternation."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.fixtures import Fixtures
from devsupport.registry import Request

PYTHON = sys.executable


@dataclass
class Sample:
    wall: float
    rss_kib: int
    requests: list[Request] = field(default_factory=list)


@dataclass
class Row:
    scenario: str
    tool: str
    samples: list[Sample]
    note: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def rss_mib(self) -> float:
        return max(s.rss_kib for s in self.samples) / 1024

    @property
    def requests(self) -> int:
        return round(statistics.median(len(s.requests) for s in self.samples))


def free_port() -> int:
    """A loopback port nobody listens on now (for a daemon's `listen`)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def run_process(
    cmd: Sequence[str], env: dict[str, str], log: Path, ok: tuple[int, ...] = (0,)
) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one process; fails loudly on an unexpected exit."""
    wall, rss, _cpu = run_timed(cmd, env, log, ok)
    return wall, rss


def run_timed(
    cmd: Sequence[str], env: dict[str, str], log: Path, ok: tuple[int, ...] = (0,)
) -> tuple[float, int, float]:
    """Wall time, peak RSS (KiB) and CPU seconds (user + sys) of one process; fails loudly on
    an unexpected exit.

    The figures come from GNU time, a small C process: a child forked from this (large) Python
    process would report this process's size as its own high-water mark.
    """
    usage = log.with_suffix(".usage")
    with log.open("ab") as out:
        start = time.perf_counter()
        code = subprocess.call(
            ["/usr/bin/time", "-f", "%M %U %S", "-o", str(usage), *cmd],
            env=env,
            stdout=out,
            stderr=out,
        )
        wall = time.perf_counter() - start
    if code not in ok:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"bench: {' '.join(cmd[:4])}... exited {code}:\n{tail}")
    rss, user, system = usage.read_text().split()[-3:]
    return wall, int(rss), float(user) + float(system)


def uploads(requests: list[Request]) -> int:
    return sum(
        1 for r in requests if r.method == "PUT" and "/blobs/uploads/" in r.path and r.status == 201
    )


def mounts(requests: list[Request]) -> int:
    return sum(1 for r in requests if r.method == "POST" and "mount=" in r.path and r.status == 201)


def layer_gets(requests: list[Request]) -> int:
    return sum(1 for r in requests if r.method == "GET" and "/blobs/" in r.path)


class Bench(Fixtures):
    """One run of the bench: its fixtures, its work directory, and the rows and facts it found."""

    def __init__(self, work: Path, runs: int, quick: bool) -> None:
        super().__init__(work)
        self.work = work
        self.runs = runs
        self.quick = quick
        self.log = work / "commands.log"
        self.rows: list[Row] = []
        self.facts: list[str] = []
        self.counter = 0

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: bytecode compiled once
        env.update(extra)
        return env

    def fresh(self, name: str) -> Path:
        self.counter += 1
        path = self.work / f"{name}-{self.counter}"
        path.mkdir(parents=True)
        return path

    @staticmethod
    def rc(*args: str) -> list[str]:
        return [PYTHON, "-m", "reconciler", *args]

    def measure(
        self,
        commands: Sequence[tuple[Sequence[str], dict[str, str]]],
        ok: tuple[int, ...] = (0,),
    ) -> Sample:
        """Run commands one after another: summed wall time, highest peak RSS, requests seen."""
        marks = (self.a.mark(), self.b.mark())
        wall, rss = 0.0, 0
        for cmd, env in commands:
            took, peak = run_process(cmd, env, self.log, ok)
            wall += took
            rss = max(rss, peak)
        requests = self.a.requests(marks[0]) + self.b.requests(marks[1])
        return Sample(wall, rss, requests)

    def rc_env(self, state: Path, specs: Path | None = None, **extra: str) -> dict[str, str]:
        env = self.env(RECONCILER_STATE_DIR=str(state), **extra)
        if specs is not None:
            env["RECONCILER_SPECS_DIR"] = str(specs)
        return env

    def sk_env(self, home: Path, cold: bool = False) -> dict[str, str]:
        """skopeo's environment; `cold` removes its blob-info cache, so that it transfers
        blobs it has seen before instead of mounting them (root keeps the cache in
        /var/lib/containers/cache, other users under $HOME)."""
        if cold:
            for cache in (
                Path("/var/lib/containers/cache"),
                home / ".local/share/containers/cache",
            ):
                for file in cache.glob("blob-info-cache-v1*"):
                    file.unlink()
        return self.env(HOME=str(home), XDG_DATA_HOME=str(home / ".local/share"))

    @staticmethod
    def skopeo_copy(src: str, dest: str) -> list[str]:
        """skopeo copy from a registry; `dest` is a registry reference or a transport:path."""
        target = dest if dest.startswith("docker-archive:") else f"docker://{dest}"
        tls = ["--src-tls-verify=false"]
        if target.startswith("docker://"):
            tls.append("--dest-tls-verify=false")
        return ["skopeo", "copy", *tls, f"docker://{src}", target]

    def alternate(
        self,
        scenario: str,
        ours: Callable[[int], Sample],
        theirs: Callable[[int], Sample] | None,
        note: tuple[str, str] = ("", ""),
    ) -> tuple[Row, Row | None]:
        mine: list[Sample] = []
        other: list[Sample] = []
        for i in range(self.runs):
            mine.append(ours(i))
            if theirs is not None:
                other.append(theirs(i))
            print(
                f"  {scenario} run {i + 1}: reconciler {mine[-1].wall:.2f} s"
                + (f", skopeo {other[-1].wall:.2f} s" if other else ""),
                file=sys.stderr,
            )
        row = Row(scenario, "reconciler", mine, note[0])
        self.rows.append(row)
        their_row = None
        if theirs is not None:
            their_row = Row(scenario, "skopeo", other, note[1])
            self.rows.append(their_row)
        return row, their_row
