"""`--only slow-layer` and `--only slow-link`: what the minimum-progress rule (min_transfer_rate
over transfer_rate_window, reconciler/store/registry/limits.py) costs a slow but honest transfer
of a large layer (issue 21).

Registry A is reached through a relay of the bench's own that forwards A's answers at a fixed
rate, shared by all connections as one link would be. `slow-layer` mirrors the layer of `big`
(about 1 GiB gzipped) at 32 MiB/s, `slow-link` a layer of about 64 MiB at 1 MiB/s; each from A
through the relay to B. reconciler runs with the rule on (the defaults: 16 KiB/s over 30 s) and
off (min_transfer_rate 0, its lowest allowed value), and skopeo copies the same image through
the same relay, in alternation. Wall time, CPU time (user + sys) and peak RSS come from GNU time.
"""

from __future__ import annotations

import statistics
import time

from bench.fixtures import MiB, spec_text
from bench.harness import Bench, Row, Sample, layer_gets, run_timed
from bench.probe import Relay
from bench.scenarios import big_image, scenario

RULE_OFF = {"RECONCILER_MIN_TRANSFER_RATE": "0"}
TOOLS = ("reconciler", "reconciler, rule off", "skopeo")


class RateRelay(Relay):
    """A relay to `target` (host:port) whose answers (target to client) go at no more than
    `rate` bytes per second in all; requests unthrottled."""

    def __init__(self, target: str, rate: float) -> None:
        self._rate = rate
        self._free_at = time.perf_counter()  # when the link has sent all it was given
        super().__init__(target)

    def passing(self, data: bytes, request: bool) -> None:
        """Book an answer's piece on the link; sleep until it would have gone out."""
        if request:
            return
        with self._lock:
            now = time.perf_counter()
            self._free_at = max(self._free_at, now) + len(data) / self._rate
            until = self._free_at
        if until > now:
            time.sleep(until - now)


def _through(bench: Bench, name: str, src: str, size: int, rate: float) -> None:
    """Mirror `src` (a reference at A) to B through a relay at `rate`, with each of TOOLS."""
    b = bench.b.host
    relay = RateRelay(bench.a.host, rate)
    slow_src = relay.host + src[len(bench.a.host) :]
    samples: dict[str, list[Sample]] = {tool: [] for tool in TOOLS}
    cpu: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    try:
        for i in range(bench.runs):
            for tool in TOOLS:
                if tool == "skopeo":
                    cmd = bench.skopeo_copy(slow_src, f"{b}/slow/{name}-sk-{i}:1")
                    env = bench.sk_env(bench.fresh("home"), cold=True)
                else:
                    specs, state = bench.fresh("specs"), bench.fresh("state")
                    target = f"{b}/slow/{name}-{'off' if 'off' in tool else 'on'}-{i}:1"
                    text = spec_text(name, slow_src, [target], "  baseAnnotations: false\n")
                    (specs / "mirror.yaml").write_text(text)
                    extra = RULE_OFF if "off" in tool else {}
                    cmd = bench.rc("apply", str(specs))
                    env = bench.rc_env(state, specs, **extra)
                mark = bench.a.mark()
                wall, rss, seconds = run_timed(cmd, env, bench.log)
                samples[tool].append(Sample(wall, rss, bench.a.requests(mark)))
                cpu[tool].append(seconds)
                print(
                    f"  {name} run {i + 1}, {tool}: {wall:.2f} s wall, {seconds:.2f} s CPU, "
                    f"{rss // 1024} MiB",
                    flush=True,
                )
    finally:
        relay.close()
    scenario_name = f"{size / MiB:.0f} MiB layer, A to B through a {rate / MiB:g} MiB/s relay"
    for tool in TOOLS:
        row = Row(scenario_name, tool, samples[tool])
        gets = statistics.median(layer_gets(s.requests) for s in row.samples)
        row.note = (
            f"CPU {statistics.median(cpu[tool]):.2f} s (user + sys, median); "
            f"{row.wall and size / MiB / row.wall:.1f} MiB/s; {gets:g} blob GETs at A"
        )
        bench.rows.append(row)
    on, off = (statistics.median(cpu[tool]) for tool in TOOLS[:2])
    walls = [statistics.median(s.wall for s in samples[tool]) for tool in TOOLS]
    bench.facts.append(
        f"{name}: {size / MiB:.0f} MiB at {rate / MiB:g} MiB/s, median of {bench.runs}: "
        f"rule on {walls[0]:.2f} s wall, {on:.2f} s CPU; rule off {walls[1]:.2f} s, "
        f"{off:.2f} s CPU; skopeo {walls[2]:.2f} s, {statistics.median(cpu['skopeo']):.2f} s CPU"
    )


@scenario("slow-layer", slow=True)
def slow_layer(bench: Bench) -> None:
    src, layer = big_image(bench)
    _through(bench, "slow-layer", src, layer.size, (4 if bench.quick else 32) * MiB)


@scenario("slow-link", slow=True)
def slow_link(bench: Bench) -> None:
    size = 16 * MiB if bench.quick else 128 * MiB  # half random: about half once gzipped
    layout, (layer,) = bench.layout("slowlink", [(size, "slowlink")])
    src = f"{bench.a.host}/slow/link:1"
    bench.seed_once(layout, src)
    _through(bench, "slow-link", src, layer.size, 1 * MiB)
