"""The scenarios, one function each, registered by name in SCENARIOS in the order they run
(that order is the table's); their helpers stand beside them."""

from __future__ import annotations

import hashlib
import signal
import statistics
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from bench.fixtures import BuiltLayer, MiB, seed, spec_text
from bench.harness import (
    Bench,
    Row,
    Sample,
    free_port,
    layer_gets,
    mounts,
    run_process,
    uploads,
)
from bench.probe import FirstByteRelay

Scenario = Callable[[Bench], None]
SCENARIOS: dict[str, Scenario] = {}
SLOW: set[str] = set()  # run only when asked for (--only NAME, or its own flag: --scale)


def scenario(name: str, slow: bool = False) -> Callable[[Scenario], Scenario]:
    """Register a scenario under `name`, the value of `--only`."""

    def register(function: Scenario) -> Scenario:
        SCENARIOS[name] = function
        if slow:
            SLOW.add(name)
        return function

    return register


@scenario("startup")
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
    rc.note = "Python: interpreter, typer, pydantic, the settings models (no YAML, httpx, asyncio)"
    sk.note = "skopeo --version (a Go binary)"
    first_request(bench)


def first_request(bench: Bench) -> None:
    """Exec to first request, read off a relay in front of registry A (bench/probe.py): what
    `diff` pays before it talks to a registry (imports, settings, specs), beside skopeo."""
    noop_bases(bench, 1)
    relay = FirstByteRelay(bench.a.host)
    specs, state = bench.fresh("specs"), bench.fresh("state")
    base, target = f"{relay.host}/noop/base-0:1", f"{relay.host}/startup/app:1"
    text = spec_text("first", base, [target], "  baseAnnotations: false\n")
    (specs / "first.yaml").write_text(text)
    env = bench.rc_env(state, specs)
    run_process(bench.rc("apply", str(specs)), env, bench.log)
    walls: dict[str, list[float]] = {"reconciler": [], "skopeo": []}

    def timed(tool: str, cmd: list[str], cmd_env: dict[str, str]) -> Sample:
        relay.reset()
        start = time.perf_counter()
        sample = bench.measure([(cmd, cmd_env)])
        assert relay.first is not None, f"{tool} sent no request"
        walls[tool].append(sample.wall)
        return Sample(relay.first - start, sample.rss_kib, sample.requests)

    def ours(i: int) -> Sample:
        return timed("reconciler", bench.rc("diff", str(specs)), env)

    def theirs(i: int) -> Sample:
        inspect = ["skopeo", "inspect", "--tls-verify=false", f"docker://{target}"]
        return timed("skopeo", inspect, bench.sk_env(bench.fresh("home")))

    try:
        rc, sk = bench.alternate("exec to first request: diff of one spec in sync", ours, theirs)
    finally:
        relay.close()
    assert sk is not None
    rc.note = f"whole diff {statistics.median(walls['reconciler']):.2f} s; exit 0"
    sk.note = f"skopeo inspect of the tag; whole run {statistics.median(walls['skopeo']):.2f} s"


def cold_image(bench: Bench, mib: int = 50) -> tuple[str, int]:
    """A/bench/cold:1: four layers of 50 MiB (A/bench/cold<mib>:1 for other sizes; 5 MiB
    with --quick)."""
    size = 5 * MiB if bench.quick else mib * MiB
    name = "cold" if mib == 50 else f"cold{mib}"
    layout, _ = bench.layout(name, [(size, f"{name}{i}") for i in range(4)])
    src = f"{bench.a.host}/bench/{name}:1"
    bench.seed_once(layout, src)
    return src, size


def mirror(bench: Bench, src: str, target: str, state: Path | None = None) -> Sample:
    """`reconciler apply` of one spec that mirrors `src` to `target`, from an empty state
    (or from `state`, a state directory kept across runs)."""
    specs, state = bench.fresh("specs"), state or bench.fresh("state")
    text = spec_text("mirror", src, [target], "  baseAnnotations: false\n")
    (specs / "mirror.yaml").write_text(text)
    return bench.measure([(bench.rc("apply", str(specs)), bench.rc_env(state, specs))])


@scenario("cold")
def cold_copy(bench: Bench) -> None:
    b = bench.b.host
    for mib in (32, 50):
        src, size = cold_image(bench, mib)

        def ours(i: int, src: str = src, mib: int = mib) -> Sample:
            return mirror(bench, src, f"{b}/cold{mib}/rc-{i}:1")

        def theirs(i: int, src: str = src, mib: int = mib) -> Sample:
            env = bench.sk_env(bench.fresh("home"), cold=True)  # a real transfer
            return bench.measure([(bench.skopeo_copy(src, f"{b}/cold{mib}/sk-{i}:1"), env)])

        title = f"cold copy: 4 x {size // MiB} MiB layers, A to B"
        rc, sk = bench.alternate(title, ours, theirs)
        assert sk is not None
        bench.facts.append(
            f"cold copy of 4 x {size // MiB} MiB: blob uploads per run: reconciler "
            f"{uploads(rc.samples[0].requests)}, skopeo {uploads(sk.samples[0].requests)} "
            "(4 layers + config each)"
        )


@scenario("mount")
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


@scenario("warm")
def warm_memory(bench: Bench) -> None:
    """The base comes from A; its blobs are in B already, in a repository an earlier process
    copied them to. A second process copies it to a new repository of B: each tool mounts from
    where it remembers the blobs (reconciler: blob-locations.json in its state_dir, kept across
    runs here; skopeo: its blob-info cache, kept across its runs here: as root
    /var/lib/containers/cache/blob-info-cache-v1.sqlite, else under $HOME/.local/share)."""
    b = bench.b.host
    src, _ = cold_image(bench)
    state, home = bench.fresh("state"), bench.fresh("home")
    mirror(bench, src, f"{b}/warm/rc-first:1", state)  # the earlier process (not timed)
    first = bench.skopeo_copy(src, f"{b}/warm/sk-first:1")
    run_process(first, bench.sk_env(home, cold=True), bench.log)

    def ours(i: int) -> Sample:
        return mirror(bench, src, f"{b}/warm/rc-{i}:1", state)

    def theirs(i: int) -> Sample:
        return bench.measure([(bench.skopeo_copy(src, f"{b}/warm/sk-{i}:1"), bench.sk_env(home))])

    title = "same registry, new repository, second process (remembered blobs)"
    rc, sk = bench.alternate(title, ours, theirs)
    assert sk is not None
    for row in (rc, sk):
        r = row.samples[-1].requests
        row.note = f"{mounts(r)} mounts, {uploads(r)} uploads, {layer_gets(r)} blob GETs"
    bench.facts.append(
        "warm: skopeo keeps its blob-info cache across its runs in that scenario (as root, in "
        "/var/lib/containers/cache); reconciler keeps its state_dir (blob-locations.json)"
    )


def _many_specs(
    bench: Bench, count: int, base: Callable[[int], str], targets: Callable[[int], list[str]]
) -> Path:
    specs = bench.fresh("specs")
    for i in range(count):
        text = spec_text(f"s{i}", base(i), targets(i), "  baseAnnotations: false\n")
        (specs / f"s{i:04d}.yaml").write_text(text)
    return specs


def noop_bases(bench: Bench, bases: int) -> None:
    for k in range(bases):
        layout, _ = bench.layout(f"noop{k}", [(64 * 1024, f"noop{k}")])
        bench.seed_once(layout, f"{bench.a.host}/noop/base-{k}:1")


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


@scenario("noop")
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


@scenario("changed")
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


@scenario("big")
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


@scenario("diffid")
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

    def inflate_only(i: int) -> Sample:
        start = time.perf_counter()
        inflater = zlib.decompressobj(31)
        with layer.path.open("rb") as handle:
            while chunk := handle.read(MiB):
                inflater.decompress(chunk)
        assert inflater.eof
        return Sample(time.perf_counter() - start, 0)

    zi, _ = bench.alternate("baseline: zlib inflate alone, one thread", inflate_only, None)
    zi.tool = "python zlib"
    zi.note = f"{blob_mb / zi.wall:.0f} MB/s of gzip (the pass's floor: sha256 runs beside it)"
    row.note += f" ({(z.wall / max(row.wall - cached.wall, 1e-3)):.0%} of zlib + sha256's rate)"

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


@scenario("daemon")
def daemon(bench: Bench) -> None:
    count = 50 if bench.quick else 500
    specs = noop_specs(bench, count, 5)
    state = bench.fresh("state")
    port = free_port()
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
