"""`python -m bench`: reconciler against skopeo, side by side, on registries of its own.

Each scenario runs reconciler and skopeo (Debian's) in alternation, `--runs` times each, as
real processes. Wall time is the median; peak RSS is the largest maximum resident set size the
kernel reports for the process (GNU time); requests are counted from the registries' own access
logs. The table is printed and, unless --quick, written to docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.images import BuiltLayer, MiB, seed, write_image, write_layer
from tests.support.registry import Registry, Request

ROOT = Path(__file__).resolve().parent.parent
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


def run_process(
    cmd: Sequence[str], env: dict[str, str], log: Path, ok: tuple[int, ...] = (0,)
) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one process; fails loudly on an unexpected exit.

    The peak comes from GNU time, a small C process: a child forked from this (large) Python
    process would report this process's size as its own high-water mark.
    """
    rss_file = log.with_suffix(".rss")
    with log.open("ab") as out:
        start = time.perf_counter()
        code = subprocess.call(
            ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd],
            env=env,
            stdout=out,
            stderr=out,
        )
        wall = time.perf_counter() - start
    if code not in ok:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"bench: {' '.join(cmd[:4])}... exited {code}:\n{tail}")
    return wall, int(rss_file.read_text().split()[-1])


class Bench:
    def __init__(self, work: Path, runs: int, quick: bool) -> None:
        self.work = work
        self.runs = runs
        self.quick = quick
        self.log = work / "commands.log"
        self.a = Registry(work / "registry-a")
        self.b = Registry(work / "registry-b")
        self.rows: list[Row] = []
        self.facts: list[str] = []
        self.counter = 0
        self.seeded: set[str] = set()

    def seed_once(self, layout: Path, reference: str) -> None:
        if reference not in self.seeded:
            seed(layout, "1", reference)
            self.seeded.add(reference)

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()

    # Processes.

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

    # Images.

    def layout(
        self, name: str, layers: list[tuple[int, str]], tag: str = "1"
    ) -> tuple[Path, list[BuiltLayer]]:
        """A layout under .bench/ (reused across runs of the bench: building is slow here)."""
        key = hashlib.sha256(repr((name, layers, tag)).encode()).hexdigest()[:12]
        path = ROOT / ".bench" / f"{name}-{key}"
        built = path / "built.txt"
        if built.exists():
            return path, _read_built(built)
        shutil.rmtree(path, ignore_errors=True)
        started = time.perf_counter()
        out = [write_layer(path, size, layer_name) for size, layer_name in layers]
        write_image(path, out, tag, name)
        _write_built(built, out)
        print(f"  built {name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return path, out


def _write_built(path: Path, layers: list[BuiltLayer]) -> None:
    path.write_text(
        "".join(f"{x.digest} {x.diff_id} {x.size} {x.uncompressed} {x.path}\n" for x in layers)
    )


def _read_built(path: Path) -> list[BuiltLayer]:
    out = []
    for line in path.read_text().splitlines():
        digest, diff_id, size, uncompressed, file = line.split(" ", 4)
        out.append(BuiltLayer(digest, diff_id, int(size), int(uncompressed), Path(file)))
    return out


def spec_text(name: str, base: str, targets: list[str], extra: str = "") -> str:
    return (
        "apiVersion: reconciler.dev/v1alpha1\nkind: ImageSpec\n"
        f"metadata: {{name: {name}}}\nspec:\n  base: {base}\n{extra}"
        f"  targets: [{', '.join(targets)}]\n---\n"
    )


def uploads(requests: list[Request]) -> int:
    return sum(
        1 for r in requests if r.method == "PUT" and "/blobs/uploads/" in r.path and r.status == 201
    )


def mounts(requests: list[Request]) -> int:
    return sum(1 for r in requests if r.method == "POST" and "mount=" in r.path and r.status == 201)


def layer_gets(requests: list[Request]) -> int:
    return sum(1 for r in requests if r.method == "GET" and "/blobs/" in r.path)


# Scenarios.


def cold_image(bench: Bench) -> tuple[str, int]:
    """A/bench/cold:1: four layers of 50 MiB (5 MiB with --quick)."""
    size = 5 * MiB if bench.quick else 50 * MiB
    layout, _ = bench.layout("cold", [(size, f"cold{i}") for i in range(4)])
    src = f"{bench.a.host}/bench/cold:1"
    bench.seed_once(layout, src)
    return src, size


def mirror(bench: Bench, src: str, target: str) -> Sample:
    """`reconciler apply` of one spec that mirrors `src` to `target`, from an empty state."""
    specs, state = bench.fresh("specs"), bench.fresh("state")
    text = spec_text("mirror", src, [target], "  baseAnnotations: false\n")
    (specs / "mirror.yaml").write_text(text)
    return bench.measure([(bench.rc("apply", str(specs)), bench.rc_env(state, specs))])


def cold_copy(bench: Bench) -> None:
    b = bench.b.host
    src, size = cold_image(bench)

    def ours(i: int) -> Sample:
        return mirror(bench, src, f"{b}/cold/rc-{i}:1")

    def theirs(i: int) -> Sample:
        env = bench.sk_env(bench.fresh("home"), cold=True)  # a real transfer
        return bench.measure([(bench.skopeo_copy(src, f"{b}/cold/sk-{i}:1"), env)])

    rc, sk = bench.alternate(f"cold copy: 4 x {size // MiB} MiB layers, A to B", ours, theirs)
    assert sk is not None
    bench.facts.append(
        f"cold copy: blob uploads per run: reconciler {uploads(rc.samples[0].requests)}, "
        f"skopeo {uploads(sk.samples[0].requests)} (4 layers + config each)"
    )


def same_registry(bench: Bench) -> None:
    a = bench.a.host
    src, _ = cold_image(bench)
    home = bench.fresh("home")  # skopeo's best case: a warm blob-info cache
    run_process(bench.skopeo_copy(src, f"{a}/mount/warmup:1"), bench.sk_env(home), bench.log)

    def ours(i: int) -> Sample:
        return mirror(bench, src, f"{a}/mount/rc-{i}:1")

    def theirs(i: int) -> Sample:
        return bench.measure([(bench.skopeo_copy(src, f"{a}/mount/sk-{i}:1"), bench.sk_env(home))])

    rc, sk = bench.alternate("same registry, new repository", ours, theirs)
    assert sk is not None
    for row in (rc, sk):
        r = row.samples[-1].requests
        row.note = f"{mounts(r)} mounts, {uploads(r)} uploads, {layer_gets(r)} blob GETs"


def _many_specs(
    bench: Bench, count: int, base: Callable[[int], str], targets: Callable[[int], list[str]]
) -> Path:
    specs = bench.fresh("specs")
    for i in range(count):
        text = spec_text(f"s{i}", base(i), targets(i), "  baseAnnotations: false\n")
        (specs / f"s{i:04d}.yaml").write_text(text)
    return specs


def noop_specs(bench: Bench, count: int, bases: int) -> Path:
    """`count` mirror specs over `bases` base tags, two target tags each."""
    a, b = bench.a.host, bench.b.host
    noop_bases(bench, bases)
    return _many_specs(
        bench,
        count,
        lambda i: f"{a}/noop/base-{i % bases}:1",
        lambda i: [f"{b}/noop/app-{i}:a", f"{b}/noop/app-{i}:b"],
    )


def noop(bench: Bench) -> None:
    a, b = bench.a.host, bench.b.host
    count, bases = (50, 5) if bench.quick else (500, 5)
    specs = noop_specs(bench, count, bases)
    state = bench.fresh("state")
    run_process(bench.rc("apply", str(specs)), bench.rc_env(state, specs), bench.log)
    home = bench.fresh("home")
    pairs = [
        (f"{a}/noop/base-{i % bases}:1", f"{b}/noop/app-{i}:{t}")
        for i in range(count)
        for t in "ab"
    ]

    def ours(i: int) -> Sample:
        return bench.measure([(bench.rc("apply", str(specs)), bench.rc_env(state, specs))])

    def theirs(i: int) -> Sample:
        env = bench.sk_env(home)
        return bench.measure([(bench.skopeo_copy(src, dest), env) for src, dest in pairs])

    tags = count * 2
    rc, _ = bench.alternate(
        f"no-op: {count} specs, {tags} tags, {bases} base tags",
        ours,
        theirs,
        (f"target: {tags + bases} requests", f"a loop of {tags} skopeo copy"),
    )

    def cold_state(i: int) -> Sample:
        fresh = bench.fresh("state")
        return bench.measure([(bench.rc("apply", str(specs)), bench.rc_env(fresh, specs))])

    bench.alternate(
        "no-op, empty state_dir (first run on a new machine)",
        cold_state,
        None,
        ("bases' manifests and configs read once", ""),
    )
    bench.facts.append(
        f"no-op: reconciler sent {rc.requests} requests for {tags} tags and {bases} base tags"
    )


def changed_base(bench: Bench) -> None:
    a, b = bench.a.host, bench.b.host
    count = 50 if bench.quick else 500
    base_layer = (MiB, "chg-base")
    first, _ = bench.layout("chg-x", [base_layer])
    src = f"{a}/chg/base:1"
    seed(first, "1", src)
    ours_specs = _many_specs(bench, count, lambda i: src, lambda i: [f"{b}/chg/rc-{i}:1"])
    their_specs = _many_specs(bench, count, lambda i: src, lambda i: [f"{b}/chg/sk-{i}:1"])
    state = bench.fresh("state")
    for specs in (ours_specs, their_specs):  # both start in sync with the old base
        run_process(bench.rc("apply", str(specs)), bench.rc_env(state, specs), bench.log)
    home = bench.fresh("home")

    def ours(i: int) -> Sample:
        moved, _ = bench.layout(f"chg-y{i}", [base_layer, (MiB, f"chg-y{i}")])
        seed(moved, "1", src)  # the base tag moves (not timed)
        return bench.measure(
            [(bench.rc("apply", str(ours_specs)), bench.rc_env(state, ours_specs))]
        )

    def theirs(i: int) -> Sample:
        env = bench.sk_env(home)
        return bench.measure(
            [(bench.skopeo_copy(src, f"{b}/chg/sk-{j}:1"), env) for j in range(count)]
        )

    rc, sk = bench.alternate(f"one changed base: {count} specs share it", ours, theirs)
    assert sk is not None
    for row in (rc, sk):
        r = row.samples[-1].requests
        row.note = f"{uploads(r)} uploads, {mounts(r)} mounts"


def big_image(bench: Bench) -> tuple[str, BuiltLayer]:
    """A/big/one:1: one layer of 2 GiB (half random), about 1 GiB once gzipped."""
    size = 64 * MiB if bench.quick else 2048 * MiB
    layout, (layer,) = bench.layout("big", [(size, "big")])
    src = f"{bench.a.host}/big/one:1"
    bench.seed_once(layout, src)
    return src, layer


def noop_bases(bench: Bench, bases: int) -> None:
    for k in range(bases):
        layout, _ = bench.layout(f"noop{k}", [(64 * 1024, f"noop{k}")])
        bench.seed_once(layout, f"{bench.a.host}/noop/base-{k}:1")


def big_layer(bench: Bench) -> None:
    b = bench.b.host
    src, layer = big_image(bench)
    blob_mib = layer.size / MiB

    def ours(i: int) -> Sample:
        return mirror(bench, src, f"{b}/big/rc-{i}:1")

    def theirs(i: int) -> Sample:
        env = bench.sk_env(bench.fresh("home"), cold=True)
        return bench.measure([(bench.skopeo_copy(src, f"{b}/big/sk-{i}:1"), env)])

    bench.alternate(f"one {blob_mib:.0f} MiB layer, A to B", ours, theirs)

    sizes: dict[str, int] = {}

    def save_ours(i: int) -> Sample:
        specs, state = bench.fresh("specs"), bench.fresh("state")
        text = spec_text("big", src, [f"{b}/big/saved:1"], "  baseAnnotations: false\n")
        (specs / "big.yaml").write_text(text)
        out = bench.work / f"rc-{i}.tar"
        cmd = bench.rc(
            "save", str(specs / "big.yaml"), "-o", str(out), "--tag", "example.com/big:1"
        )
        sample = bench.measure([(cmd, bench.rc_env(state, specs))])
        sizes["reconciler"] = out.stat().st_size
        out.unlink()
        return sample

    def save_theirs(i: int) -> Sample:
        out = bench.work / f"sk-{i}.tar"
        cmd = bench.skopeo_copy(src, f"docker-archive:{out}:example.com/big:1")
        sample = bench.measure([(cmd, bench.sk_env(bench.fresh("home"), cold=True))])
        sizes["skopeo"] = out.stat().st_size
        out.unlink()
        return sample

    rc, sk = bench.alternate(
        f"save the {blob_mib:.0f} MiB image to a docker archive", save_ours, save_theirs
    )
    assert sk is not None
    rc.note = f"archive {sizes['reconciler']:,} bytes (blob stored once, gzip)"
    sk.note = f"archive {sizes['skopeo']:,} bytes (layers stored uncompressed)"


def diff_id(bench: Bench) -> None:
    a, b = bench.a.host, bench.b.host
    _, layer = big_image(bench)
    specs = bench.fresh("specs")
    (specs / "d.yaml").write_text(
        spec_text(
            "d",
            "scratch",
            [f"{b}/diffid/x:1"],
            f'  layers: [{{ref: "{a}/big/one@{layer.digest}"}}]\n',
        )
    )
    states: list[Path] = []

    def first(i: int) -> Sample:
        states.append(bench.fresh("state"))
        env = bench.rc_env(states[-1], specs)
        return bench.measure([(bench.rc("diff", str(specs)), env)], ok=(2,))

    def again(i: int) -> Sample:
        env = bench.rc_env(states[i], specs)
        return bench.measure([(bench.rc("diff", str(specs)), env)], ok=(2,))

    blob_mb = layer.size / 1e6
    row, _ = bench.alternate(
        f"diff_id of a {layer.size / MiB:.0f} MiB gzip layer (diff, cold cache)", first, None
    )
    cached, _ = bench.alternate("the same diff again (cached diff_id)", again, None)
    row.note = (
        f"{blob_mb / row.wall:.0f} MB/s of gzip with process start; the pass alone "
        f"(minus the cached run) {blob_mb / max(row.wall - cached.wall, 1e-3):.0f} MB/s"
    )
    to_source = sum(1 for r in cached.samples[0].requests if "/big/" in r.path)
    cached.note = f"{to_source} requests to the layer's registry"

    # What zlib and hashlib do on this machine with the same bytes, in one process, from disk:
    # the same work as the pass (the blob's digest, and the digest of what it inflates to).
    def zlib_pass(i: int) -> Sample:
        start = time.perf_counter()
        inflater = zlib.decompressobj(31)
        blob, tar = hashlib.sha256(), hashlib.sha256()
        with layer.path.open("rb") as handle:
            while chunk := handle.read(MiB):
                blob.update(chunk)
                tar.update(inflater.decompress(chunk))
        assert "sha256:" + tar.hexdigest() == layer.diff_id
        assert "sha256:" + blob.hexdigest() == layer.digest
        return Sample(time.perf_counter() - start, 0)

    z, _ = bench.alternate("baseline: zlib inflate + both sha256, one thread", zlib_pass, None)
    z.tool = "python zlib"
    z.note = f"{blob_mb / z.wall:.0f} MB/s of gzip"

    def shell_pass(i: int) -> Sample:
        start = time.perf_counter()
        out = subprocess.run(
            f"gzip -dc {layer.path} | sha256sum",
            shell=True,
            check=True,
            capture_output=True,
            text=True,
        )
        assert "sha256:" + out.stdout.split()[0] == layer.diff_id
        return Sample(time.perf_counter() - start, 0)

    g, _ = bench.alternate("baseline: gzip -dc piped to sha256sum", shell_pass, None)
    g.tool = "gzip + sha256sum"
    g.note = f"{blob_mb / g.wall:.0f} MB/s of gzip"


def daemon(bench: Bench) -> None:
    count = 50 if bench.quick else 500
    specs = noop_specs(bench, count, 5)
    state = bench.fresh("state")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = bench.rc_env(
        state,
        specs,
        RECONCILER_LISTEN=f"127.0.0.1:{port}",
        RECONCILER_RESYNC_INTERVAL="5",
        RECONCILER_RESYNC_JITTER="0",
    )
    duration = 12 if bench.quick else 32
    marks = (bench.a.mark(), bench.b.mark())
    with bench.log.open("ab") as out:
        process = subprocess.Popen(bench.rc("run"), env=env, stdout=out, stderr=out)
    rss: list[int] = []
    start = time.perf_counter()
    while time.perf_counter() - start < duration:
        time.sleep(0.5)
        status = Path(f"/proc/{process.pid}/status").read_text()
        rss.append(int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1]))
    status = Path(f"/proc/{process.pid}/status").read_text()
    hwm = int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1])
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    requests = bench.a.requests(marks[0]) + bench.b.requests(marks[1])
    row = Row(
        f"daemon: {count} specs, resync every 5 s, {duration} s",
        "reconciler",
        [Sample(duration, hwm, requests)],
    )
    passes = max(1, round(duration / 5))
    row.note = (
        f"RSS after 2 s {rss[3] / 1024:.0f} MiB, at the end {rss[-1] / 1024:.0f} MiB; "
        f"about {passes + 1} passes, {len(requests) / (passes + 1):.0f} requests each"
    )
    bench.rows.append(row)


def startup(bench: Bench) -> None:
    """What every run pays before its first request: the process start."""
    empty = bench.fresh("empty")

    def ours(i: int) -> Sample:
        env = bench.rc_env(bench.fresh("state"), empty)
        return bench.measure([(bench.rc("validate", str(empty)), env)])

    def theirs(i: int) -> Sample:
        return bench.measure([(["skopeo", "--version"], bench.sk_env(bench.fresh("home")))])

    rc, sk = bench.alternate("process start: validate an empty directory", ours, theirs)
    assert sk is not None
    rc.note = "Python: interpreter, pydantic models, httpx"
    sk.note = "skopeo --version (a Go binary)"


SCENARIOS: dict[str, Callable[[Bench], None]] = {
    "startup": startup,
    "cold": cold_copy,
    "mount": same_registry,
    "noop": noop,
    "changed": changed_base,
    "big": big_layer,
    "diffid": diff_id,
    "daemon": daemon,
}


# Report.


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and scenario")
    parser.add_argument("--quick", action="store_true", help="small sizes; docs not written")
    parser.add_argument("--only", action="append", choices=list(SCENARIOS), help="repeatable")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args(argv)
    for tool in ("skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is not installed; run scripts/setup")
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "reconciler")], check=True)
    work = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    bench = Bench(work, args.runs, args.quick)
    started = time.perf_counter()
    try:
        for name in args.only or list(SCENARIOS):
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


if __name__ == "__main__":
    raise SystemExit(main())
