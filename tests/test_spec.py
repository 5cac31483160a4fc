from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from reconciler.spec import json_schema, load_specs

D = "sha256:" + "e" * 64
HEADER = "apiVersion: reconciler.dev/v1alpha1\nkind: ImageSpec\n"


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def spec(body: str, name: str | None = None) -> str:
    meta = f"metadata:\n  name: {name}\n" if name else ""
    return (
        HEADER + meta + "spec:\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "  ") + "\n"
    )


GOOD = """
base: r.io/base:1
targets: [r.io/app:1]
"""


def errors_of(root: Path) -> list[str]:
    return [str(e).replace(str(root) + "/", "") for e in load_specs([root]).errors]


def test_good_spec_loads_with_defaults(tmp_path: Path) -> None:
    write(tmp_path, "web.yaml", spec(GOOD))
    result = load_specs([tmp_path])
    assert result.errors == ()
    (loaded,) = result.specs
    assert loaded.name == "web" and loaded.body.base_annotations is True
    assert loaded.body.format is None and not loaded.body.adds_nothing


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "base: r.io/b:1\ncolour: blue\ntargets: [r.io/a:1]",
            "x.yaml:5: spec.colour: unknown field",
        ),
        (
            "base: r.io/b:1\ntargets: [r.io/a:1]\nlayers:\n  - registry: r.io\n"
            "    repository: l\n    digest: sha256:../x",
            "x.yaml:9: spec.layers[0].digest: invalid digest 'sha256:../x'",
        ),
        (
            "base: r.io/Base:1\ntargets: [r.io/a:1]",
            "x.yaml:4: spec.base: invalid reference 'r.io/Base:1'",
        ),
        (
            "base: r.io/b:1\ntargets: [r.io/a:" + "t" * 129 + "]",
            "x.yaml:5: spec.targets[0]: invalid reference",
        ),
        ("base: r.io/b:1\ntargets: [r.io/a]", "x.yaml:5: spec.targets[0]: target r.io/a must be"),
        ("base: r.io/b:1\ntargets: [r.io/a@" + D + "]", "spec.targets[0]: target"),
        ("base: r.io/b:1\ntargets: []", "x.yaml:5: spec.targets: at least one target is needed"),
        ("base: r.io/b:1", "x.yaml:3: spec.targets: required field is missing"),
        (
            "base: r.io/b:1\nplatforms: [linux]\ntargets: [r.io/a:1]",
            "x.yaml:5: spec.platforms[0]: invalid platform 'linux'",
        ),
        ("base: r.io/b:1\nformat: zip\ntargets: [r.io/a:1]", "x.yaml:5: spec.format:"),
        (
            "base: r.io/b:1\ncreated: yesterday\ntargets: [r.io/a:1]",
            "x.yaml:5: spec.created: created 'yesterday' is not an RFC 3339 time",
        ),
        (
            "base: r.io/b:1\nconfig:\n  exposedPorts: ['80/tcp', '99999']\ntargets: [r.io/a:1]",
            "spec.config.exposedPorts: invalid port '99999'",
        ),
        (
            "base: r.io/b:1\nconfig:\n  env: {'A=B': x}\ntargets: [r.io/a:1]",
            "spec.config.env: invalid environment variable name 'A=B'",
        ),
        (
            "base: r.io/b:1\nconfig:\n  env: {PORT: 8080}\ntargets: [r.io/a:1]",
            "x.yaml:6: spec.config.env.PORT: Input should be a valid string",
        ),
        (
            f"base: r.io/b:1\nlayers:\n  - ref: r.io/l:1@{D}\ntargets: [r.io/a:1]",
            "x.yaml:6: spec.layers[0]: 'ref' names a layer by digest only",
        ),
        (
            "base: r.io/b:1\nlayers:\n  - ref: r.io/l:1\ntargets: [r.io/a:1]",
            "'ref' must name the layer by digest",
        ),
        (
            f"base: r.io/b:1\nlayers:\n  - ref: r.io/l@{D}\n    digest: {D}\ntargets: [r.io/a:1]",
            "give either 'ref' or 'registry'/'repository'/'digest', not both",
        ),
        (
            f"base: r.io/b:1\nlayers:\n  - registry: r.io\n    digest: {D}\ntargets: [r.io/a:1]",
            "(missing: repository)",
        ),
        (
            f"base: r.io/b:1\nlayers:\n  - ref: r.io/l@{D}\n    mediaType: text/plain\n"
            "targets: [r.io/a:1]",
            "mediaType 'text/plain' is not a known layer media type",
        ),
        ("base: scratch\ntargets: [r.io/a:1]", "a spec on 'scratch' needs at least one layer"),
        ("base: r.io/b:1\ntargets: [r.io/a:1, r.io/a:1]", "listed twice"),
    ],
)
def test_field_errors_name_file_line_and_field(tmp_path: Path, body: str, expected: str) -> None:
    write(tmp_path, "x.yaml", HEADER + "spec:\n" + textwrap.indent(body, "  ") + "\n")
    errors = errors_of(tmp_path)
    assert len(errors) == 1, errors
    assert expected in errors[0], errors[0]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "base: r.io/b:1\nlayer: []\ntargets: [r.io/a:1]",
            "spec.layer: unknown field; did you mean 'layers'?",
        ),
        (
            "base: r.io/b:1\ntarget: [r.io/a:1]",
            "spec.target: unknown field; did you mean 'targets'?",
        ),
        (
            "base: r.io/b:1\nbaseAnnotation: false\ntargets: [r.io/a:1]",
            "spec.baseAnnotation: unknown field; did you mean 'baseAnnotations'?",
        ),
        (
            f"base: r.io/b:1\nlayers:\n  - ref: r.io/l@{D}\n    digets: {D}\ntargets: [r.io/a:1]",
            "x.yaml:7: spec.layers[0].digets: unknown field; did you mean 'digest'?",
        ),
        (
            f"base: r.io/b:1\nlayers:\n  - ref: r.io/l@{D}\n    mediatype: x\ntargets: [r.io/a:1]",
            "spec.layers[0].mediatype: unknown field; did you mean 'mediaType'?",
        ),
        (
            "base: r.io/b:1\nconfig:\n  working_directory: /app\ntargets: [r.io/a:1]",
            "spec.config.working_directory: unknown field; did you mean 'workingDir'?",
        ),
        # Nothing close: no guess.
        (
            "base: r.io/b:1\ncolour: blue\ntargets: [r.io/a:1]",
            "x.yaml:5: spec.colour: unknown field",
        ),
        (
            f"base: r.io/b:1\nlayers:\n  - ref: r.io/l@{D}\n    layers: []\ntargets: [r.io/a:1]",
            "x.yaml:7: spec.layers[0].layers: unknown field",
        ),
    ],
)
def test_unknown_field_suggests_the_close_one(tmp_path: Path, body: str, expected: str) -> None:
    write(tmp_path, "x.yaml", HEADER + "spec:\n" + textwrap.indent(body, "  ") + "\n")
    errors = errors_of(tmp_path)  # a misspelt `target` also leaves `targets` missing
    (error,) = [e for e in errors if "unknown field" in e]
    assert error.endswith(expected), errors


def test_unknown_top_level_and_metadata_fields_suggest_too(tmp_path: Path) -> None:
    write(tmp_path, "x.yaml", HEADER + "metdata: {nmae: web}\n" + spec(GOOD)[len(HEADER) :])
    assert errors_of(tmp_path) == ["x.yaml:3: metdata: unknown field; did you mean 'metadata'?"]
    write(tmp_path, "x.yaml", spec(GOOD).replace("spec:", "metadata: {nmae: web}\nspec:"))
    assert errors_of(tmp_path) == ["x.yaml:3: metadata.nmae: unknown field; did you mean 'name'?"]


@pytest.mark.parametrize(
    ("file", "text", "name"),
    [
        ("x.yaml", spec("base: r.io/B:1\ntargets: [r.io/a:1]", "web"), "web"),
        ("web.yaml", spec("base: r.io/B:1\ntargets: [r.io/a:1]"), "web"),  # the stem default
        ("web.yaml", spec(GOOD, "Web"), None),  # the name itself is what is wrong
        ("web.yaml", HEADER + "metadata: [web]\n" + spec(GOOD)[len(HEADER) :], None),
        ("My Spec.yaml", spec("base: r.io/B:1\ntargets: [r.io/a:1]"), None),
        ("web.yaml", HEADER + "spec:\n  base: [unclosed\n", None),  # not even YAML
        ("web.yaml", "- a\n", None),
    ],
)
def test_invalid_specs_keep_the_name_they_could_read(
    tmp_path: Path, file: str, text: str, name: str | None
) -> None:
    write(tmp_path, file, text)
    errors = load_specs([tmp_path]).errors
    assert errors and [e.spec_name for e in errors] == [name] * len(errors), errors


def test_specs_held_back_by_a_conflict_keep_their_names(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", spec(GOOD, "a"))
    write(tmp_path, "b.yaml", spec(GOOD, "b"))
    write(tmp_path, "c.yaml", spec("base: r.io/b:1\ntargets: [r.io/c:1]", "b"))
    errors = load_specs([tmp_path]).errors
    assert sorted((e.location.file.rsplit("/", 1)[-1], e.spec_name) for e in errors) == [
        ("b.yaml", "b"),
        ("c.yaml", "b"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            HEADER + "spec:\n  base: r.io/b:1\n  base: r.io/c:1\n  targets: [r.io/a:1]\n",
            "x.yaml:5: spec.base: duplicate key 'base' (first on line 4)",
        ),
        ("!!python/object/apply:os.system ['true']\n", "x.yaml:1: YAML tag"),
        (HEADER + "spec: !!python/name:os.system\n", "x.yaml:3: spec: YAML tag"),
        (HEADER + "spec: !custom {}\n", "YAML tag '!custom' is not allowed"),
        (HEADER + "spec:\n  base: [unclosed\n", "x.yaml:5: invalid YAML"),
        (
            "apiVersion: v1\nkind: ImageSpec\nspec: {base: r.io/b:1, targets: [r.io/a:1]}\n",
            "x.yaml:1: apiVersion: Input should be 'reconciler.dev/v1alpha1' (got 'v1')",
        ),
        ("- a\n- b\n", "x.yaml:1: a spec document must be a mapping"),
        (HEADER + "spec:\n  <<: {base: r.io/b:1}\n  targets: [r.io/a:1]\n", "merge keys"),
        (HEADER + "spec:\n  base: r.io/b:1\n  targets: [r.io/a:1]\n  1: x\n", "plain strings"),
    ],
)
def test_document_errors(tmp_path: Path, text: str, expected: str) -> None:
    write(tmp_path, "x.yaml", text)
    errors = errors_of(tmp_path)
    assert len(errors) == 1 and expected in errors[0], errors


MISINDENTED = (
    "spec:\n"
    "  base: r.io/b:1\n"
    "  targets: [r.io/a:1]\n"
    "layers:\n"  # one level too far left: the parser trips over `annotations` below
    "  - path: files/a\n"
    "    destination: /a\n"
    "  annotations: {a: b}\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MISINDENTED,
            "x.yaml:6: invalid YAML: 'layers' is indented less than the fields before and "
            "after it (2 spaces); the parser stopped at line 9: did not find expected '-' "
            "indicator",
        ),
        (
            MISINDENTED.replace("  annotations: {a: b}\n", ""),
            "x.yaml:6: layers: unknown field; 'layers' is a field of spec: indent it under 'spec:'",
        ),
        (  # the error is at the key's own line: nothing above to blame
            "spec:\n  base: r.io/b:1\n   targets: [r.io/a:1]\n",
            "x.yaml:5: invalid YAML: mapping values are not allowed in this context",
        ),
    ],
)
def test_a_misindented_field_is_reported_where_it_is(
    tmp_path: Path, text: str, expected: str
) -> None:
    """Before: a `layers:` one level too far left on line 8 was reported at line 11, where
    the parser stopped."""
    write(tmp_path, "x.yaml", HEADER + text)
    errors = errors_of(tmp_path)
    assert len(errors) == 1 and expected in errors[0], errors


def test_alias_bomb_is_refused_in_bounded_time(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    write(tmp_path, "bomb.yaml", HEADER + "\n".join(lines) + "\nspec: *a9\n")
    started = time.monotonic()
    errors = errors_of(tmp_path)
    assert time.monotonic() - started < 5
    assert len(errors) == 1 and "alias bomb" in errors[0]


def test_bad_documents_do_not_hide_good_ones(tmp_path: Path) -> None:
    write(
        tmp_path,
        "multi.yaml",
        spec(GOOD, "one")
        + "---\n"
        + spec("base: r.io/B\ntargets: [r.io/x:1]", "two")
        + "---\n"
        + spec("base: r.io/b:1\ntargets: [r.io/app:2]", "three"),
    )
    result = load_specs([tmp_path])
    assert [s.name for s in result.specs] == ["one", "three"]
    assert len(result.errors) == 1 and "multi.yaml:14: spec.base" in str(result.errors[0])


def test_duplicate_targets_and_names_hold_back_every_spec_involved(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", spec(GOOD, "a"))
    write(tmp_path, "b.yaml", spec(GOOD, "b"))
    write(tmp_path, "c.yaml", spec("base: r.io/b:1\ntargets: [r.io/c:1]", "a"))
    write(tmp_path, "d.yaml", spec("base: r.io/b:1\ntargets: [r.io/d:1]", "d"))
    result = load_specs([tmp_path])
    assert [s.name for s in result.specs] == ["d"]
    messages = [str(e) for e in result.errors]
    assert any(
        "b.yaml:7: spec.targets[0]: target r.io/app:1 is also written by spec 'a'" in m
        for m in messages
    ), messages
    assert any("c.yaml:1: metadata.name: name 'a' is already used" in m for m in messages)


def test_directory_walk_skips_dotfiles_and_follows_configmap_links(tmp_path: Path) -> None:
    # The layout a Kubernetes ConfigMap mount (or git-sync) produces.
    data = tmp_path / "..2024_01_01_00_00_00.000"
    write(data, "web.yaml", spec(GOOD))
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "web.yaml").symlink_to("..data/web.yaml")
    write(tmp_path, ".hidden.yaml", "not: [valid")
    write(tmp_path, "notes.txt", "not a spec")
    write(tmp_path, "nested/deeper/api.yml", spec("base: r.io/b:1\ntargets: [r.io/api:1]"))
    (tmp_path / "nested" / "loop").symlink_to("..")
    result = load_specs([tmp_path])
    assert result.errors == ()
    assert sorted(s.name for s in result.specs) == ["api", "web"]


def test_file_stem_must_be_a_valid_name(tmp_path: Path) -> None:
    write(tmp_path, "My Spec.yaml", spec(GOOD))
    assert "set metadata.name" in errors_of(tmp_path)[0]


def test_empty_documents_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "x.yaml", "---\n---\n" + spec(GOOD) + "---\n")
    result = load_specs([tmp_path])
    assert len(result.specs) == 1 and result.errors == ()


def test_missing_paths_and_non_utf8_files(tmp_path: Path) -> None:
    result = load_specs([tmp_path / "missing"])
    assert "missing: no such file or directory" in str(result.errors[0])
    (tmp_path / "x.yaml").write_bytes(b"\xff\xfe bad")
    assert "x.yaml: not UTF-8 text" in errors_of(tmp_path)[0]


def test_schema_is_json_schema_with_every_field() -> None:
    schema = json_schema()
    text = json.dumps(schema)
    for field in (
        "baseAnnotations",
        "diffID",
        "mediaType",
        "exposedPorts",
        "workingDir",
        "targets",
        "platforms",
    ):
        assert field in text
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["ImageSpecBody"]["properties"]["targets"]["minItems"] == 1
