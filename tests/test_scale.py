"""Many specs: what bounds a pass's memory keeps its output whole; and the cheap paths of
loading (depth pre-check, address text) say what the long ones said."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.engine import SPECS_PER_SLOT, _bounded
from reconciler.errors import SpecError
from reconciler.memo import Memo
from reconciler.model.report import RunReport, SpecReport
from reconciler.model.state import SpecState
from reconciler.oci.location import parse_address
from reconciler.yamlsource import DEPTH_LIMIT, read_documents
from tests.conftest import Cli, World

SPECS = SPECS_PER_SLOT + 9  # with concurrency 1: more specs than run at once
HALF = DEPTH_LIMIT // 2 + 1  # a sequence and a mapping per level: one level too many


def test_output_lists_every_spec_and_the_summary_when_specs_run_in_turns(
    cli: Cli, world: World
) -> None:
    a = world.a.host
    names = [f"s{i:02d}" for i in range(SPECS)]
    for name in names:
        cli.write_spec(f"{name}.yaml", f"base: {a}/base/single:1\ntargets: [{a}/turns/{name}:1]")
    env = {"RECONCILER_CONCURRENCY": "1"}

    first = cli("apply", env_extra=env)
    assert first.code == 0, first.stderr
    headers = [line for line in first.stdout.splitlines() if line.startswith("s")]
    assert headers == [
        f"{name} ({cli.specs}/{name}.yaml): Synced, 1 tag at {headers[i].split(' at ')[1]}"
        for i, name in enumerate(names)
    ]
    assert all(
        line.endswith(" 1 manifest pushed)") and "(applied: 1 tag created" in line
        for line in headers
    )
    assert "  + tag      " not in first.stdout  # a line per spec; the plan only with -v
    assert first.stdout.endswith(
        f"; {SPECS} manifests, {SPECS} tags; {SPECS} of {SPECS} specs in sync.\n"
    )

    again = cli("diff", "-o", "json", env_extra=env)
    assert again.code == 0, again.stderr
    document = json.loads(again.stdout)
    assert [s["name"] for s in document["specs"]] == names
    assert {s["state"] for s in document["specs"]} == {"Synced"}
    assert all(len(s["targets"]) == 1 and s["targets"][0]["observed"] for s in document["specs"])
    assert (document["summary"]["specs"], document["summary"]["inSync"]) == (SPECS, SPECS)
    text = cli("diff", env_extra=env)
    assert text.stdout.endswith(f"No changes; {SPECS} of {SPECS} specs in sync.\n")
    assert sum(1 for line in text.stdout.splitlines() if ": Synced, 1 tag at " in line) == SPECS


def test_bounded_runs_at_most_limit_at_once_and_keeps_the_order() -> None:
    running = 0
    most = 0
    made = 0

    async def work(i: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(10 - i % 10):  # later ones finish first
            await asyncio.sleep(0)
        running -= 1
        return i * i

    def works() -> Iterator[Coroutine[Any, Any, int]]:
        nonlocal made
        for i in range(50):
            made += 1
            yield work(i)

    results = asyncio.run(_bounded(works(), 4))
    assert results == [i * i for i in range(50)]
    assert most == 4 and made == 50


def test_bounded_makes_the_works_as_the_workers_take_them() -> None:
    made: list[int] = []
    gate = asyncio.Event()

    async def work(i: int) -> int:
        await gate.wait()
        return i

    def works() -> Iterator[Coroutine[Any, Any, int]]:
        for i in range(20):
            made.append(i)
            yield work(i)

    async def main() -> list[int]:
        task = asyncio.ensure_future(_bounded(works(), 3))
        for _ in range(20):  # the loop runs on: the three workers wait at the gate
            await asyncio.sleep(0)
        assert made == [0, 1, 2]  # one work each, and no more made while they wait
        gate.set()
        return await task

    assert asyncio.run(main()) == list(range(20))


@pytest.mark.parametrize(
    ("style", "text"),
    [
        ("flow sequences", "x: " + "[" * DEPTH_LIMIT + "]" * DEPTH_LIMIT + "\n"),
        ("flow mappings", "x: " + "{a: " * DEPTH_LIMIT + "1" + "}" * DEPTH_LIMIT + "\n"),
        ("implicit mappings in flow", "[a: " * HALF + "1" + "]" * HALF + "\n"),
        ("block sequences", "- " * (DEPTH_LIMIT + 1) + "x\n"),
        ("block mappings", "".join(" " * i + "a:\n" for i in range(DEPTH_LIMIT + 1)) + "\n"),
        ("complex keys", "? " * (DEPTH_LIMIT + 1) + "x\n"),
    ],
)
def test_one_level_past_the_nesting_limit_is_refused(style: str, text: str) -> None:
    """The pre-check that skips the event pass must never skip a document this deep."""
    with pytest.raises(SpecError, match=f"nesting deeper than {DEPTH_LIMIT} levels"):
        list(read_documents("deep.yaml", text))


def test_a_spec_of_ordinary_depth_is_read_whole() -> None:
    text = "a:\n  b: [1, {c: [x, y]}]\n  d:\n    - e: 1\n      f: -2\n"
    (document,) = read_documents("ok.yaml", text)
    assert document.value == {"a": {"b": [1, {"c": ["x", "y"]}], "d": [{"e": 1, "f": -2}]}}
    assert document.lines[("a", "d")] == 3


@pytest.mark.parametrize(
    "value",
    [
        "r.io/team/app:1",
        "r.io/team/app@sha256:" + "a" * 64,
        "r.io/team/app:1@sha256:" + "b" * 64,
        "127.0.0.1:5000/app:v1",
        "busybox",
        "[::1]:5000/app:1",
    ],
)
def test_an_address_is_written_as_its_reference(value: str) -> None:
    address = parse_address(value, Path("/"))
    assert address.reference is not None
    assert str(address) == str(address.reference)


def test_local_addresses_keep_their_text(tmp_path: Path) -> None:
    assert str(parse_address("oci:out:v1", tmp_path)) == f"oci:{tmp_path}/out:v1"
    assert str(parse_address("oci:out", tmp_path)) == f"oci:{tmp_path}/out"
    archive = parse_address("docker-archive:a.tar:team/app:1", tmp_path)
    assert str(archive) == f"docker-archive:{tmp_path}/a.tar:team/app:1"


def test_a_run_report_shows_as_a_short_line() -> None:
    specs = tuple(SpecReport(f"s{i}.yaml", SpecState.SYNCED, f"s{i}") for i in range(1000))
    assert repr(RunReport(specs, True)) == "RunReport(1000 specs, applied=True)"


def test_a_memo_computes_once_shares_failures_and_keeps_no_task() -> None:
    calls: list[str] = []
    tasks: list[weakref.ref[asyncio.Task[Any]]] = []

    async def make(key: str) -> str:
        calls.append(key)
        task = asyncio.current_task()
        assert task is not None
        tasks.append(weakref.ref(task))
        del task  # the traceback of a failure keeps this frame's locals
        await asyncio.sleep(0)
        if key == "bad":
            raise ValueError(f"{key} failed")
        return key.upper()

    async def main() -> None:
        memo = Memo()
        first = await asyncio.gather(*(memo.get("k", lambda: make("k")) for _ in range(3)))
        assert first == ["K", "K", "K"]
        for _ in range(3):
            with pytest.raises(ValueError, match=r"^bad failed$"):
                await memo.get("bad", lambda: make("bad"))
        assert await memo.get("k", lambda: make("again")) == "K"
        await asyncio.sleep(0)
        gc.collect()
        assert calls == ["k", "bad"]
        assert [ref() for ref in tasks] == [None, None]  # outcomes kept, not the tasks

    asyncio.run(main())
