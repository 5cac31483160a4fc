"""A corpus of hostile and broken spec files: each is refused with an error that names the file
(and the line and field where there is one), in bounded time and memory, and never stops the
good spec lying next to it."""

from __future__ import annotations

import re
import time
import tracemalloc
from pathlib import Path

import pytest

from reconciler.spec import load_specs
from tests.support.report import record

HEADER = "apiVersion: reconciler.dev/v1alpha1\nkind: ImageSpec\n"
D = "sha256:" + "a" * 64
OK = "spec:\n  base: r.io/b:1\n  targets: [r.io/a:1]\n"
TIME_LIMIT = 10.0  # seconds per input (tracemalloc slows it about 2x)
MEMORY_LIMIT = 64 * 1024 * 1024  # peak bytes allocated per input
# What a user needs of a nesting refusal: the line where it happens and the word for it. Whether
# reconciler's own depth check or the YAML parser's (PyYAML 6.0.4 and newer) speaks first is the
# parser's business, so the wording past that is not pinned.
NESTING = re.compile(r"^[^:]+:\d+: .*nesting")


def laughs(levels: int, width: int) -> str:
    lines = ['l0: &l0 "lol"']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return HEADER + "\n".join(lines) + f"\nspec: *l{levels - 1}\n"


def spec_with(body: str) -> str:
    return HEADER + "spec:\n" + "".join(f"  {line}\n" for line in body.splitlines())


CORPUS: list[tuple[str, str | bytes, str | re.Pattern[str]]] = [
    ("python object tag", "!!python/object/apply:os.system ['id']\n", ":1: YAML tag"),
    ("python name tag", HEADER + "spec: !!python/name:os.system\n", ":3: spec: YAML tag"),
    ("custom tag", HEADER + "spec: !vault {x: 1}\n", "YAML tag '!vault' is not allowed"),
    ("binary tag", spec_with("base: !!binary aGVsbG8=\ntargets: [r.io/a:1]"), "YAML tag"),
    ("billion laughs", laughs(10, 10), "alias bomb"),
    ("wide alias fan-out", laughs(3, 2000), "alias bomb"),
    ("deep flow nesting", HEADER + "spec: " + "[" * 50_000 + "]" * 50_000 + "\n", NESTING),
    (
        "deep block nesting",
        HEADER + "spec:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)),
        NESTING,
    ),
    ("file over 1 MiB", HEADER + "# " + "x" * (1024 * 1024) + "\n" + OK, "larger than 1048576"),
    (
        "unknown field",
        spec_with("base: r.io/b:1\nimage: x\ntargets: [r.io/a:1]"),
        "spec.image: unknown field",
    ),
    (
        "digest with a path",
        spec_with("base: r.io/b:1\nlayers: [{ref: 'r.io/l@sha256:../x'}]\ntargets: [r.io/a:1]"),
        "spec.layers[0]",
    ),
    (
        "digest field with a path",
        spec_with(
            "base: r.io/b:1\nlayers:\n"
            "- {registry: r.io, repository: l, digest: 'sha256:../../x'}\n"
            "targets: [r.io/a:1]"
        ),
        "invalid digest 'sha256:../../x'",
    ),
    (
        "digest of the wrong length",
        spec_with(f"base: r.io/b@{D[:-1]}\ntargets: [r.io/a:1]"),
        "spec.base: invalid reference",
    ),
    (
        "upper-case digest",
        spec_with(f"base: r.io/b@{D.upper().replace('SHA256', 'sha256')}\ntargets: [r.io/a:1]"),
        "spec.base: invalid reference",
    ),
    (
        "129-character tag",
        spec_with("base: r.io/b:1\ntargets: [r.io/a:" + "t" * 129 + "]"),
        "spec.targets[0]: invalid reference",
    ),
    ("tag with a slash", spec_with("base: r.io/b:1\ntargets: ['r.io/a:x/y']"), "spec.targets[0]"),
    (
        "path traversal in a name",
        spec_with("base: r.io/../etc:1\ntargets: [r.io/a:1]"),
        "spec.base: invalid reference",
    ),
    (
        "name over 255 characters",
        spec_with("base: r.io/b:1\ntargets: [r.io/" + "a/" * 130 + "x:1]"),
        "spec.targets[0]",
    ),
    (
        "duplicate key",
        spec_with("base: r.io/b:1\nbase: r.io/c:1\ntargets: [r.io/a:1]"),
        "duplicate key 'base'",
    ),
    ("merge key", spec_with("<<: {base: r.io/b:1}\ntargets: [r.io/a:1]"), "merge keys"),
    (
        "non-string key",
        spec_with("base: r.io/b:1\n? [a, b]\n: x\ntargets: [r.io/a:1]"),
        "plain strings",
    ),
    ("invalid UTF-8", HEADER.encode() + b"spec:\n  base: r.io/\xff\xfe:1\n", "not UTF-8"),
    (
        "NUL byte",
        HEADER + "spec:\n  base: r.io/b:1\x00\n  targets: [r.io/a:1]\n",
        ":4: invalid YAML: control character",
    ),
    ("unclosed flow", HEADER + "spec: {base: r.io/b:1, targets: [r.io/a:1\n", "invalid YAML"),
    ("tab indentation", HEADER + "spec:\n\tbase: r.io/b:1\n", "invalid YAML"),
    (
        "wrong apiVersion",
        OK.replace("spec:", "apiVersion: v2\nkind: ImageSpec\nspec:"),
        "apiVersion",
    ),
    ("list instead of mapping", "- 1\n- 2\n", "must be a mapping"),
    ("10,000 empty documents", "---\n" * 10_000 + HEADER + "spec: 5\n", "spec"),
    (
        "huge integer",
        spec_with("base: r.io/b:1\ntargets: [r.io/a:1]\ncreated: " + "9" * 5000),
        "spec.created",
    ),
    (
        "env value not a string",
        spec_with("base: r.io/b:1\nconfig: {env: {A: [1]}}\ntargets: [r.io/a:1]"),
        "spec.config.env.A",
    ),
    (
        "bad exposed port",
        spec_with("base: r.io/b:1\nconfig: {exposedPorts: ['70000/tcp']}\ntargets: [r.io/a:1]"),
        "exposedPorts",
    ),
]


@pytest.mark.parametrize(("name", "content", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_hostile_spec_is_refused_in_bounded_time_and_memory(
    tmp_path: Path, name: str, content: str | bytes, expected: str | re.Pattern[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        bad.write_text(content, encoding="utf-8")
    (tmp_path / "good.yaml").write_text(HEADER + OK)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = load_specs([tmp_path])
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    messages = [str(e) for e in result.errors]
    record(
        "inputs",
        input=name,
        size=len(content),
        seconds=round(seconds, 3),
        peak_mib=round(peak / 1024 / 1024, 1),
        error=messages[0].replace(str(tmp_path) + "/", "") if messages else None,
    )
    assert len(messages) == 1, messages
    assert messages[0].startswith(str(bad)), messages[0]  # names the file
    if isinstance(expected, re.Pattern):
        assert expected.search(messages[0]), messages[0]
    else:
        assert expected in messages[0], messages[0]
    assert [s.name for s in result.specs] == ["good"]  # the neighbour still loads
    assert seconds < TIME_LIMIT
    assert peak < MEMORY_LIMIT
