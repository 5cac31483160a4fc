"""`--scale`: ten thousand specs (20,000 tags over 10 base tags), in one run of the bench.

Behind a flag, since it takes minutes: a first apply that seeds the targets, the no-op apply,
a daemon's first full pass over the same specs, loading them alone (`validate`), and the
registry's own HEAD ceiling (`ab`, apache2-utils) on one of the tags, so that the no-op's
request rate is read against what this registry serves on this machine in the same run.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.harness import Bench, Row, Sample, free_port
from bench.scenarios import noop_specs, scenario

MiB_KIB = 1024
ACCEPT = (
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)
_RPS = re.compile(r"Requests per second:\s+([0-9.]+)")
_DURATION = re.compile(r"^reconciler_reconcile_duration_seconds_(sum|count) ([0-9.e+]+)$", re.M)

# Targets of issue 13 (each from one run on this machine).
NOOP_WALL = 15.0
LOAD_WALL = 3.0
RSS_MIB = 300
CEILING_SHARE = 0.65


@scenario("scale", slow=True)
def scale(bench: Bench) -> None:
    count, bases = (1000, 10) if bench.quick else (10_000, 10)
    tags = count * 2
    specs = noop_specs(bench, count, bases)
    state = bench.fresh("state")
    env = bench.rc_env(state, specs)
    apply = bench.rc("apply", str(specs))

    first = bench.measure([(apply, env)])
    _row(bench, f"scale: first apply, {count:,} specs, {tags:,} tags, {bases} base tags", first)
    noop = bench.measure([(apply, env)])
    row = _row(bench, f"scale: no-op apply, {count:,} specs", noop)
    ceiling = head_ceiling(bench, f"{bench.b.host}/noop/app-0", "a")
    rate = len(noop.requests) / noop.wall
    row.note = (
        f"target {tags + bases:,} requests; {rate:.0f} requests/s = {rate / ceiling:.2f} of "
        f"the registry's HEAD ceiling ({ceiling:.0f}/s, ab -k -c 4)"
    )
    daemon = daemon_pass(bench, specs, state)
    validate = bench.measure([(bench.rc("validate", str(specs)), env)])
    _row(bench, f"scale: load {count:,} spec files (validate)", validate)
    ceiling_row = Row("scale: registry HEAD ceiling (ab -k -n 20000 -c 4)", "ab", [])
    ceiling_row.samples.append(Sample(20_000 / ceiling, 0))
    ceiling_row.note = f"{ceiling:.0f} requests/s"
    bench.rows.append(ceiling_row)
    daemon_rate = len(daemon.requests) / daemon.wall
    checks = [
        ("first apply RSS", first.rss_kib / MiB_KIB, RSS_MIB, "MiB"),
        ("no-op wall", noop.wall, NOOP_WALL, "s"),
        ("no-op RSS", noop.rss_kib / MiB_KIB, RSS_MIB, "MiB"),
        ("daemon pass wall", daemon.wall, NOOP_WALL, "s"),
        ("daemon RSS", daemon.rss_kib / MiB_KIB, RSS_MIB, "MiB"),
        ("loading wall", validate.wall, LOAD_WALL, "s"),
    ]
    bench.facts.append(
        f"scale ({count:,} specs): "
        + "; ".join(
            f"{what} {value:.1f} {unit} ({value / limit:.2f} of the {limit} {unit} target)"
            for what, value, limit, unit in checks
        )
        + f"; no-op {rate / ceiling:.2f} and daemon pass {daemon_rate / ceiling:.2f} of the "
        f"HEAD ceiling (target {CEILING_SHARE}); no-op requests {len(noop.requests):,}, "
        f"daemon pass {len(daemon.requests):,} (target {tags + bases:,})"
    )


def _row(bench: Bench, name: str, sample: Sample) -> Row:
    row = Row(name, "reconciler", [sample])
    bench.rows.append(row)
    print(f"  {name}: {sample.wall:.2f} s, {sample.rss_kib / MiB_KIB:.0f} MiB", flush=True)
    return row


def head_ceiling(bench: Bench, repository: str, tag: str) -> float:
    """Requests per second the registry answers to HEAD of one manifest, keep-alive, 4 at a
    time: what no client of it can beat on this machine."""
    if shutil.which("ab") is None:
        raise SystemExit("bench: ab is not installed (apache2-utils); run scripts/setup")
    host, _, path = repository.partition("/")
    url = f"http://{host}/v2/{path}/manifests/{tag}"
    out = subprocess.run(
        ["ab", "-q", "-k", "-n", "20000", "-c", "4", "-i", "-H", f"Accept: {ACCEPT}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = _RPS.search(out)
    if match is None or "Non-2xx responses" in out:
        raise SystemExit(f"bench: ab did not measure {url}:\n{out[-2000:]}")
    return float(match.group(1))


def daemon_pass(bench: Bench, specs: Path, state: Path, **extra: str) -> Sample:
    """`reconciler run` on the seeded specs: its first full pass (the pass's own duration from
    /metrics), its peak RSS once ready, and the requests it sent until then."""
    port = free_port()
    env = bench.rc_env(
        state,
        specs,
        RECONCILER_LISTEN=f"127.0.0.1:{port}",
        RECONCILER_RESYNC_INTERVAL="3600",  # one pass only, the first
        RECONCILER_RESYNC_JITTER="0",
        **extra,
    )
    marks = (bench.a.mark(), bench.b.mark())
    start = time.perf_counter()
    with bench.log.open("ab") as out:
        process = subprocess.Popen(bench.rc("run"), env=env, stdout=out, stderr=out)
    try:
        while not _get(f"http://127.0.0.1:{port}/readyz").startswith("ready"):
            if process.poll() is not None:
                raise SystemExit(f"bench: the daemon exited {process.returncode}; see {bench.log}")
            if time.perf_counter() - start > 600:
                raise SystemExit("bench: the daemon was not ready after 600 s")
            time.sleep(0.1)
        ready = time.perf_counter() - start
        status = Path(f"/proc/{process.pid}/status").read_text()
        hwm = int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1])
        found = dict(_DURATION.findall(_get(f"http://127.0.0.1:{port}/metrics")))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    requests = bench.a.requests(marks[0]) + bench.b.requests(marks[1])
    passes = float(found.get("count", "0"))
    took = float(found.get("sum", "0"))
    name = f"scale: daemon, first full pass over {len(list(specs.iterdir())):,} specs"
    sample = Sample(took, hwm, requests)
    row = _row(bench, name, sample)
    row.note = f"{passes:.0f} pass(es) by /metrics; process start to /readyz {ready:.1f} s"
    return sample


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - loopback
            return str(answer.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())
    except OSError:
        return ""  # not listening yet
