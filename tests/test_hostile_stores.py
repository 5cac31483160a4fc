"""A corpus of malformed OCI layouts and docker archives, each the base of one spec.

Every case builds a valid store and breaks exactly one thing in it (a JSON type, an encoding,
a size, a digest, a missing or linked member), then runs `reconciler diff -o json` and
`reconciler apply` over two specs: the hostile one, and a good one (a good layout base plus a
`path:` layer, written to an `oci:` target). Contract (DESIGN.md sections 6 and 7, and
docs/specs.md "Local bases and targets"): untrusted JSON is parsed into strict models, sizes
and digests are checked against the bytes, and an error belongs to the spec and the source
that met it, never to the run. So, for each case:
- no traceback, exit code 1 from both commands;
- the hostile spec is Failed, and its message names its spec file, the store's path and,
  where there is one, the member at fault (index.json, blobs/sha256/..., manifest.json, ...);
- the good spec is planned by diff and applied by apply, its tag written;
- each run ends within 10 s and peaks under 300 MiB (the child's own rusage, os.wait4);
- nothing is written outside tmp_path (the child runs with cwd, HOME and TMPDIR in tmp_path),
  nothing in tmp_path changes but the state directory and the two targets, and the hostile
  spec's target never gets its tag.
OCI layout cases run twice: as a directory and as a tar file. Where the flaw is only in a
layer's bytes (which a dry run does not read), diff may plan the copy instead of failing.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.support.hostile import (
    BOM,
    DOCKER_TAG,
    LAYOUT_MARKER,
    REF_NAME,
    Directory,
    DockerParts,
    OciParts,
    Run,
    Symlink,
    Tree,
    blob_member,
    nested_lists,
    run_reconciler,
    snapshot,
    tar_bytes,
    write_dir,
    write_tar,
)
from tests.support.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    canonical,
    make_layer,
    make_tar,
    sha256,
    write_layout,
)

TIME_LIMIT = 10.0  # seconds, per CLI run
MEMORY_LIMIT_MIB = 300  # the child's peak resident set
JSON_CAP = 4 * 1024 * 1024
CONFIG_CAP = 8 * 1024 * 1024
DEPTH = 100_000  # nested lists: 200 kB of JSON, far within the 4 MiB cap
INDEX = "index.json"
ALLOWED = frozenset({"state", "good-out", "bad-out"})  # what the runs may write


@dataclass(frozen=True)
class Hostile:
    """A broken store, and what its error must name besides the store's path."""

    tree: Tree
    members: tuple[str, ...]  # any one of these names the member at fault; () = none
    selector: str | None = "default"  # "default": the usual tag; None: no selector
    diff_sees: bool = True  # False: only layer bytes are wrong; a dry run need not read them
    outside: dict[str, bytes] = field(default_factory=dict)  # files under tmp_path/outside
    raw: bytes | None = None  # the archive's exact bytes, when not a tar of `tree`


def blob(member: str) -> tuple[str, ...]:
    """A blob is named by its path in the store or by its digest."""
    return (member, "sha256:" + member.rsplit("/", 1)[1])


def hostile_image(arch: str = "amd64", text: bytes = b"hostile\n", gz: bool = True) -> Image:
    return Image(
        "linux",
        arch,
        [make_layer({"etc/hostile": text}, compress=gz)],
        config_extra={"author": "hostile corpus"},
    )


# OCI layouts: each case gets a fresh valid layout's parts and breaks one thing.


def at_index(raw: bytes) -> Callable[[OciParts], Hostile]:
    def build(p: OciParts) -> Hostile:
        p.index_raw = raw
        return Hostile(p.tree(), (INDEX,))

    return build


def index_value(make: Callable[[OciParts], Any]) -> Callable[[OciParts], Hostile]:
    def build(p: OciParts) -> Hostile:
        p.index = make(p)
        return Hostile(p.tree(), (INDEX,))

    return build


def entry_field(key: str, value: Any) -> Callable[[OciParts], Hostile]:
    def build(p: OciParts) -> Hostile:
        p.entry[key] = value
        return Hostile(p.tree(), (INDEX,))

    return build


def index_bytes(make: Callable[[OciParts], bytes]) -> Callable[[OciParts], Hostile]:
    def build(p: OciParts) -> Hostile:
        p.index_raw = make(p)
        return Hostile(p.tree(), (INDEX,))

    return build


def manifest_field(key: str, make: Callable[[Any], Any]) -> Callable[[OciParts], Hostile]:
    def build(p: OciParts) -> Hostile:
        manifest = p.manifest_json()
        manifest[key] = make(manifest.get(key))
        p.set_manifest(canonical(manifest))
        return Hostile(p.tree(), blob(p.manifest_member))

    return build


def manifest_bytes(make: Callable[[bytes], bytes]) -> Callable[[OciParts], Hostile]:
    def build(p: OciParts) -> Hostile:
        p.set_manifest(make(p.manifest))
        return Hostile(p.tree(), blob(p.manifest_member))

    return build


def config_change(change: Callable[[dict[str, Any]], None]) -> Callable[[OciParts], Hostile]:
    def build(p: OciParts) -> Hostile:
        config = json.loads(p.config)
        change(config)
        p.set_config(canonical(config))
        return Hostile(p.tree(), blob(p.config_member))

    return build


def descriptor_size(which: str, delta: int) -> Callable[[OciParts], Hostile]:
    """The manifest's config or layer descriptor announces a size the blob does not have."""

    def build(p: OciParts) -> Hostile:
        manifest = p.manifest_json()
        target = manifest["config"] if which == "config" else manifest["layers"][0]
        target["size"] += delta
        member = p.config_member if which == "config" else p.layer_member
        p.set_manifest(canonical(manifest))
        return Hostile(p.tree(), blob(member), diff_sees=which == "config")

    return build


def entry_size(delta: int) -> Callable[[OciParts], Hostile]:
    def build(p: OciParts) -> Hostile:
        p.entry["size"] += delta
        return Hostile(p.tree(), (INDEX, *blob(p.manifest_member)))

    return build


def member_of(p: OciParts, which: str) -> str:
    return {"manifest": p.manifest_member, "config": p.config_member, "layer": p.layer_member}[
        which
    ]


def wrong_bytes(which: str) -> Callable[[OciParts], Hostile]:
    """The blob file holds other bytes than its name (its digest) says."""

    def build(p: OciParts) -> Hostile:
        member = member_of(p, which)
        if which == "layer":
            p.extra[member] = make_layer({"etc/other": b"other\n"}).blob
        else:  # the same JSON and one more space: still valid, no longer the digest's bytes
            p.extra[member] = (p.manifest if which == "manifest" else p.config) + b" "
        return Hostile(p.tree(), blob(member), diff_sees=which != "layer")

    return build


def missing(which: str) -> Callable[[OciParts], Hostile]:
    def build(p: OciParts) -> Hostile:
        member = member_of(p, which)
        p.removed.add(member)
        return Hostile(p.tree(), blob(member), diff_sees=which != "layer")

    return build


def manifest_entry(p: OciParts, member: str, value: Any) -> Hostile:
    p.extra[member] = value
    return Hostile(p.tree(), blob(member))


def blob_links_outside(p: OciParts) -> Hostile:
    """The manifest blob is a link out of the layout, to a file with exactly the right bytes."""
    hex_ = p.manifest_member.rsplit("/", 1)[1]
    p.extra[p.manifest_member] = Symlink(f"../../../../outside/{hex_}")
    return Hostile(p.tree(), blob(p.manifest_member), outside={hex_: p.manifest})


def no_marker(p: OciParts) -> Hostile:
    p.marker = False
    return Hostile(p.tree(), ("oci-layout",))


def tag_names_two_images(p: OciParts) -> Hostile:
    other = hostile_image("arm64", b"the other image\n")
    for data in (other.layers[0].blob, other.config, other.manifest):
        p.extra[blob_member(sha256(data))] = data
    second = {
        "mediaType": OCI_MANIFEST,
        "digest": other.digest,
        "size": len(other.manifest),
        "annotations": {REF_NAME: "latest"},
    }
    p.index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [p.entry, second]}
    return Hostile(p.tree(), ("'latest'", INDEX))


def nested_index_manifests_dict(p: OciParts) -> Hostile:
    """index.json -> an image index blob whose `manifests` is an object, not a list."""
    child = {
        "mediaType": OCI_MANIFEST,
        "digest": sha256(p.manifest),
        "size": len(p.manifest),
        "platform": {"architecture": "amd64", "os": "linux"},
    }
    raw = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": {"0": child}})
    p.extra[blob_member(sha256(raw))] = raw
    p.entry.update(mediaType=OCI_INDEX, digest=sha256(raw), size=len(raw))
    return Hostile(p.tree(), blob(blob_member(sha256(raw))))


def padded_index(p: OciParts) -> Any:
    return {"schemaVersion": 2, "manifests": [p.entry], "padding": " " * (JSON_CAP + 1)}


OCI_CASES: dict[str, Callable[[OciParts], Hostile]] = {
    # index.json: wrong JSON types at every level.
    "index.json-is-a-list": at_index(b"[]"),
    "index.json-is-a-string": at_index(b'"manifests"'),
    "index.json-is-a-number": at_index(b"2"),
    "index.json-is-null": at_index(b"null"),
    "manifests-is-a-dict": index_value(lambda p: {"schemaVersion": 2, "manifests": {"0": p.entry}}),
    "manifests-are-strings": index_value(
        lambda p: {"schemaVersion": 2, "manifests": [p.entry["digest"]]}
    ),
    "entry-digest-is-a-number": entry_field("digest", 12345),
    "entry-size-is-a-string": lambda p: entry_field("size", str(p.entry["size"]))(p),
    "entry-size-is-negative": entry_field("size", -1),
    "entry-size-is-10**30": entry_field("size", 10**30),
    "entry-mediaType-is-a-list": entry_field("mediaType", [OCI_MANIFEST]),
    "entry-annotations-is-a-list": entry_field("annotations", [f"{REF_NAME}=latest"]),
    "entry-annotation-value-is-a-number": entry_field(
        "annotations", {REF_NAME: "latest", "org.example.count": 3}
    ),
    # The manifest and config blobs: wrong JSON types.
    "manifest-layers-is-a-dict": manifest_field("layers", lambda v: {"0": v[0]}),
    "manifest-config-is-a-string": manifest_field("config", lambda v: v["digest"]),
    "manifest-schemaVersion-is-a-string": manifest_field("schemaVersion", lambda v: "2"),
    "config-diff_ids-is-a-string": config_change(
        lambda c: c["rootfs"].update(diff_ids=c["rootfs"]["diff_ids"][0])
    ),
    "config-history-is-a-dict": config_change(lambda c: c.update(history={"0": c["history"][0]})),
    "nested-index-manifests-is-a-dict": nested_index_manifests_dict,
    # Depth and size.
    "index.json-100000-deep": at_index(nested_lists(DEPTH)),
    "manifest-100000-deep": manifest_bytes(
        lambda m: m[:-1] + b',"x":' + nested_lists(DEPTH) + b"}"
    ),
    "index.json-over-4MiB": index_value(padded_index),
    "manifest-over-4MiB": manifest_bytes(
        lambda m: m[:-1] + b',"annotations":{"pad":"' + b"x" * (JSON_CAP + 1) + b'"}}'
    ),
    # Encodings and JSON that parsers read differently.
    "index.json-invalid-utf8": index_bytes(lambda p: p.index_json()[:-1] + b', "x": "\xff"}'),
    "index.json-with-a-bom": index_bytes(lambda p: BOM + p.index_json()),
    "manifest-with-a-bom": manifest_bytes(lambda m: BOM + m),
    "index.json-duplicate-keys": index_bytes(lambda p: b'{"manifests": [], ' + p.index_json()[1:]),
    "manifest-duplicate-keys": manifest_bytes(lambda m: b'{"layers":[],' + m[1:]),
    "index.json-nan": index_bytes(
        lambda p: b'{"schemaVersion": NaN, "manifests": ' + json.dumps([p.entry]).encode() + b"}"
    ),
    "manifest-nan": manifest_bytes(lambda m: m[:-1] + b',"x":NaN}'),
    # Sizes and digests that lie; blobs that are missing or not files.
    "manifest-size-bigger-than-blob": entry_size(+10),
    "manifest-size-smaller-than-blob": entry_size(-10),
    "config-size-lies": descriptor_size("config", +1),
    "layer-size-lies": descriptor_size("layer", +1),
    "manifest-digest-mismatch": wrong_bytes("manifest"),
    "config-digest-mismatch": wrong_bytes("config"),
    "layer-digest-mismatch": wrong_bytes("layer"),
    "manifest-blob-missing": missing("manifest"),
    "config-blob-missing": missing("config"),
    "layer-blob-missing": missing("layer"),
    "manifest-blob-is-a-directory": lambda p: manifest_entry(p, p.manifest_member, Directory()),
    "manifest-blob-links-outside": blob_links_outside,
    "manifest-blob-links-to-etc-passwd": lambda p: manifest_entry(
        p, p.manifest_member, Symlink("/etc/passwd")
    ),
    "no-oci-layout-file": no_marker,
    "tag-names-two-images": tag_names_two_images,
}


# Docker archives: a fresh valid archive's parts, one thing broken.


def with_entry(
    change: Callable[[dict[str, Any], DockerParts], None],
) -> Callable[[DockerParts], Hostile]:
    def build(d: DockerParts) -> Hostile:
        entry = d.entry()
        change(entry, d)
        d.manifest = [entry]
        return Hostile(d.tree(), ("manifest.json",))

    return build


def manifest_json_raw(make: Callable[[DockerParts], bytes]) -> Callable[[DockerParts], Hostile]:
    def build(d: DockerParts) -> Hostile:
        d.manifest_raw = make(d)
        return Hostile(d.tree(), ("manifest.json",))

    return build


def entry_json(d: DockerParts) -> bytes:
    return json.dumps(d.entry()).encode()


def docker_config(change: Callable[[dict[str, Any]], Any]) -> Callable[[DockerParts], Hostile]:
    def build(d: DockerParts) -> Hostile:
        config = json.loads(d.config)
        replaced = change(config)
        set_docker_config(d, canonical(config if replaced is None else replaced))
        return Hostile(d.tree(), (d.config_name,))

    return build


def docker_config_raw(make: Callable[[bytes], bytes]) -> Callable[[DockerParts], Hostile]:
    def build(d: DockerParts) -> Hostile:
        set_docker_config(d, make(d.config))
        return Hostile(d.tree(), (d.config_name,))

    return build


def set_docker_config(d: DockerParts, raw: bytes) -> None:
    d.config = raw
    d.config_name = sha256(raw).split(":")[1] + ".json"


def config_names_missing(d: DockerParts) -> Hostile:
    d.manifest = [{**d.entry(), "Config": "nowhere.json"}]
    return Hostile(d.tree(), ("nowhere.json",))


def layers_climb_out(d: DockerParts) -> Hostile:
    """manifest.json names a layer above the archive's root (no such member exists)."""
    name = "../" + d.layer_names[0]
    d.manifest = [{**d.entry(), "Layers": [name]}]
    return Hostile(d.tree(), (name,))


def layer_member_climbs_out(d: DockerParts) -> Hostile:
    """The archive itself holds a member above its root, and manifest.json uses it."""
    name = "../" + d.layer_names[0]
    d.removed.add(d.layer_names[0])
    d.layer_names = [name]
    return Hostile(d.tree(), (name,))


def layer_symlink_loop(d: DockerParts) -> Hostile:
    d.layer_names = ["aaa/layer.tar"]
    d.extra.update(
        {"aaa/layer.tar": Symlink("../bbb/layer.tar"), "bbb/layer.tar": Symlink("../aaa/layer.tar")}
    )
    return Hostile(d.tree(), ("aaa/layer.tar", "bbb/layer.tar"))


def layer_missing(d: DockerParts) -> Hostile:
    d.removed.add(d.layer_names[0])
    return Hostile(d.tree(), (d.layer_names[0],))


def layer_not_a_tar(d: DockerParts) -> Hostile:
    d.extra[d.layer_names[0]] = b"this is not a layer\n" * 100
    return Hostile(d.tree(), (d.layer_names[0],))


def layer_not_its_diff_id(d: DockerParts) -> Hostile:
    """A plain tar layer whose bytes are not those the config's diff_id names."""
    d.extra[d.layer_names[0]] = make_tar({"etc/other": b"not the layer the config names\n"})
    diff_id = d.image.layers[0].diff_id
    return Hostile(d.tree(), (d.layer_names[0], diff_id), diff_sees=False)


def more_layers_than_diff_ids(d: DockerParts) -> Hostile:
    d.layer_names = [d.layer_names[0], "extra/layer.tar"]
    d.extra["extra/layer.tar"] = make_tar({"etc/extra": b"extra\n"})
    return Hostile(d.tree(), ("manifest.json", d.config_name))


def repositories_links_out(d: DockerParts) -> Hostile:
    d.extra["repositories"] = Symlink("/etc/passwd")
    return Hostile(d.tree(), ("repositories",))


def truncated(d: DockerParts) -> Hostile:
    """The archive ends in the middle of the layer's data."""
    data = tar_bytes(d.tree())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        layer = tar.getmember(d.layer_names[0])
    return Hostile({}, (d.layer_names[0],), raw=data[: layer.offset_data + layer.size // 2])


def duplicate_manifest_json(d: DockerParts) -> Hostile:
    d.extra["./manifest.json"] = json.dumps([{**d.entry(), "Config": "decoy.json"}]).encode()
    return Hostile(d.tree(), ("manifest.json",))


def repo_tags_empty_dict(d: DockerParts) -> Hostile:
    d.manifest = [{**d.entry(), "RepoTags": {}}]
    return Hostile(d.tree(), ("manifest.json",), selector=None)


def big_config(d: DockerParts) -> Hostile:
    config = json.loads(d.config)
    config["comment"] = "x" * (CONFIG_CAP + 1)
    set_docker_config(d, canonical(config))
    return Hostile(d.tree(), (d.config_name,))


DOCKER_CASES: dict[str, Callable[[DockerParts], Hostile]] = {
    # manifest.json: wrong JSON types.
    "manifest.json-is-an-object": lambda d: Hostile(
        DockerParts(d.image, manifest=d.entry()).tree(), ("manifest.json",)
    ),
    "manifest.json-is-null": manifest_json_raw(lambda d: b"null"),
    "manifest.json-entries-are-numbers": manifest_json_raw(lambda d: b"[1, 2]"),
    "Config-is-a-number": with_entry(lambda e, d: e.update(Config=7)),
    "Layers-is-a-string": with_entry(lambda e, d: e.update(Layers=d.layer_names[0])),
    "RepoTags-is-a-dict": with_entry(lambda e, d: e.update(RepoTags={"example.com/a": "1"})),
    "RepoTags-is-an-empty-dict": repo_tags_empty_dict,
    # manifest.json: encodings, duplicates, NaN, depth, size.
    "manifest.json-invalid-utf8": manifest_json_raw(
        lambda d: b"[" + entry_json(d)[:-1] + b', "Comment": "\xff"}]'
    ),
    "manifest.json-with-a-bom": manifest_json_raw(lambda d: BOM + b"[" + entry_json(d) + b"]"),
    "manifest.json-duplicate-keys": manifest_json_raw(
        lambda d: b'[{"Config": "decoy.json", ' + entry_json(d)[1:] + b"]"
    ),
    "manifest.json-nan": manifest_json_raw(
        lambda d: b"[" + entry_json(d)[:-1] + b', "Size": NaN}]'
    ),
    "manifest.json-100000-deep": manifest_json_raw(lambda d: nested_lists(DEPTH)),
    "manifest.json-over-4MiB": manifest_json_raw(
        lambda d: b"[" + entry_json(d)[:-1] + b', "Comment": "' + b"x" * JSON_CAP + b'"}]'
    ),
    # Members named by manifest.json.
    "Config-names-a-missing-member": config_names_missing,
    "Layers-entry-climbs-out": layers_climb_out,
    "layer-member-climbs-out": layer_member_climbs_out,
    "layer-symlink-loop": layer_symlink_loop,
    "layer-member-missing": layer_missing,
    "layer-is-not-a-tar": layer_not_a_tar,
    "layer-is-not-its-diff_id": layer_not_its_diff_id,
    "more-Layers-than-diff_ids": more_layers_than_diff_ids,
    # The config member.
    "config-diff_ids-is-a-string": docker_config(
        lambda c: c["rootfs"].update(diff_ids=c["rootfs"]["diff_ids"][0])
    ),
    "config-history-is-a-dict": docker_config(lambda c: c.update(history={"0": c["history"][0]})),
    "config-is-a-list": docker_config(lambda c: []),
    "config-invalid-utf8": docker_config_raw(lambda c: c[:-1] + b',"comment":"\xff"}'),
    "config-over-8MiB": big_config,
    # The repositories member, the tar itself. (An invalid index.json beside manifest.json
    # does not stop a docker archive: see test_docker_archive_reads_past_an_invalid_index.)
    "repositories-links-to-etc-passwd": repositories_links_out,
    "duplicate-manifest.json": duplicate_manifest_json,
    "truncated-archive": truncated,
    "not-a-tar-at-all": lambda d: Hostile({}, (), raw=b"this is not a tar archive\n" * 100),
}


# The run and its checks.


@dataclass(frozen=True)
class Store:
    base: str  # the spec's `base:` as written
    label: str  # how the store's path must appear in the message
    hostile: Hostile


def good_setup(cli: Cli) -> None:
    """A good spec beside the hostile one: a layout base and a `path:` layer, to a layout."""
    image = Image("linux", "amd64", [make_layer({"etc/good": b"good\n"})])
    write_layout(cli.root / "stores" / "good-layout", [image])
    files = cli.root / "good-files"
    files.mkdir()
    (files / "hello.txt").write_text("hello from the good spec\n")
    cli.write_spec(
        "good.yaml",
        """
        base: "oci:../stores/good-layout:latest"
        layers: [{path: ../good-files}]
        targets: ["oci:../good-out:1"]
        """,
        spec_name="good",
    )


def run_problems(run: Run, label: str) -> list[str]:
    problems = []
    output = run.stdout + run.stderr
    if "Traceback" in output:
        lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
        where = [line.strip() for line in lines if line.strip().startswith('File "')]
        problems.append(
            f"{label}: traceback: {lines[-1] if lines else '?'} at {where[-1] if where else '?'}"
        )
    if run.killed or run.seconds >= TIME_LIMIT:
        problems.append(f"{label}: took {run.seconds:.1f}s (limit {TIME_LIMIT:.0f}s)")
    if run.max_rss_kib > MEMORY_LIMIT_MIB * 1024:
        problems.append(f"{label}: peak memory {run.max_rss_kib // 1024} MiB")
    return problems


def message_problems(label: str, message: str, store: Store) -> list[str]:
    problems = []
    if store.label not in message:
        problems.append(f"{label}: the message does not name the store {store.label!r}")
    members = store.hostile.members
    if members and not any(m in message for m in members):
        problems.append(f"{label}: the message names none of {list(members)}")
    return problems


def diff_problems(run: Run, store: Store) -> tuple[list[str], str | None]:
    """Checks of `diff -o json`; also returns the good spec's desired digest."""
    problems = run_problems(run, "diff")
    sees = store.hostile.diff_sees
    if run.code != 1 and (sees or run.code != 2):
        problems.append(f"diff: exit {run.code}, expected 1")
    try:
        report = json.loads(run.stdout)
        specs = {s["name"]: s for s in report["specs"]}
        bad, good = specs["hostile"], specs["good"]
    except (ValueError, KeyError, TypeError):
        problems.append("diff: no JSON report with both specs on stdout")
        return problems, None
    if bad["state"] == "Failed":
        if not str(bad["file"]).endswith("hostile.yaml"):
            problems.append(f"diff: the failure is reported for {bad['file']}")
        problems += message_problems("diff", str(bad["error"]), store)
    elif sees or bad["state"] != "OutOfSync":
        problems.append(f"diff: hostile spec is {bad['state']}, not Failed")
    if good["state"] != "OutOfSync" or good["error"]:
        problems.append(f"diff: good spec is {good['state']} ({good['error']})")
    others = report["summary"]["failed"] + report["summary"]["invalid"]
    if others > 1:
        problems.append(f"diff: {others} specs failed or invalid, not only the hostile one")
    return problems, good["desired"]


def blocks(text: str) -> dict[str, list[str]]:
    """The text report, per spec name: its header line, then its indented lines."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        header = re.match(r"^(\S+) \((.+)\): (\w+)", line)
        if header:
            current = found.setdefault(header.group(1), [])
            current.append(line)
        elif line.startswith("  ") and current is not None:
            current.append(line)
        else:
            current = None
    return found


def apply_problems(run: Run, store: Store) -> list[str]:
    problems = run_problems(run, "apply")
    if run.code != 1:
        problems.append(f"apply: exit {run.code}, expected 1")
    found = blocks(run.stdout)
    bad, good = found.get("hostile"), found.get("good")
    if bad is None or good is None:
        return [*problems, "apply: the text report lacks the hostile or the good spec"]
    if not re.match(r"^hostile \(.*hostile\.yaml\): Failed", bad[0]):
        problems.append(f"apply: hostile spec reported as {bad[0]!r}")
    else:
        errors = "\n".join(line for line in bad if line.lstrip().startswith("!"))
        problems += message_problems("apply", errors, store)
    if not re.match(r"^good \(.*good\.yaml\): Synced, 1 tag at sha256:\w+ \(applied: ", good[0]):
        problems.append(f"apply: good spec reported as {good[0]!r}")
    return problems


def tags_of(layout: Path) -> dict[str, str]:
    try:
        body = json.loads((layout / "index.json").read_bytes())
        return {
            m["annotations"][REF_NAME]: m["digest"]
            for m in body["manifests"]
            if REF_NAME in m.get("annotations", {})
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def check(cli: Cli, tmp_path: Path, store: Store, record: Callable[[str, object], None]) -> None:
    hostile = store.hostile
    outside = tmp_path / "outside"
    outside.mkdir()
    for name, data in hostile.outside.items():
        (outside / name).write_bytes(data)
    base_line = f'base: "{store.base}"'
    cli.write_spec(
        "hostile.yaml",
        f"""
        {base_line}
        baseAnnotations: false
        targets: ["oci:../bad-out:1"]
        """,
        spec_name="hostile",
    )
    good_setup(cli)
    for name in ("cwd", "home", "tmp"):
        (tmp_path / name).mkdir()
    env = {
        **cli.env(),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path / "tmp"),
    }
    before = snapshot(tmp_path, ALLOWED)
    siblings = sorted(os.listdir(tmp_path.parent))

    def run(*args: str) -> Run:
        return run_reconciler(list(args), env=env, cwd=tmp_path / "cwd", timeout=TIME_LIMIT)

    diff = run("diff", "-o", "json", str(cli.specs))
    record("diff", f"{diff.seconds:.2f}s {diff.max_rss_kib // 1024}MiB exit {diff.code}")
    problems, desired = diff_problems(diff, store)
    if (tmp_path / "good-out").exists() or (tmp_path / "bad-out").exists():
        problems.append("diff: wrote a target")
    applied = run("apply", str(cli.specs))
    record("apply", f"{applied.seconds:.2f}s {applied.max_rss_kib // 1024}MiB exit {applied.code}")
    problems += apply_problems(applied, store)
    good_tags = tags_of(tmp_path / "good-out")
    if "1" not in good_tags or (desired is not None and good_tags["1"] != desired):
        problems.append(f"apply: good-out has tags {good_tags}, expected 1 -> {desired}")
    if "1" in tags_of(tmp_path / "bad-out"):
        problems.append("apply: the hostile spec's target got its tag")
    after = snapshot(tmp_path, ALLOWED)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        problems.append(f"files changed outside the targets and state: {changed[:10]}")
    if sorted(os.listdir(tmp_path.parent)) != siblings:
        problems.append("something was written beside tmp_path")
    assert not problems, (
        "\n".join(problems) + "\n\n" + diff.describe() + "\n\n" + applied.describe()
    )


@pytest.mark.parametrize("form", ["dir", "tar"])
@pytest.mark.parametrize("case", list(OCI_CASES))
def test_hostile_oci_layout_fails_alone(
    cli: Cli, tmp_path: Path, record_property: Callable[[str, object], None], case: str, form: str
) -> None:
    hostile = OCI_CASES[case](OciParts(hostile_image()))
    name = "hostile-layout" + (".tar" if form == "tar" else "")
    path = cli.root / "stores" / name
    if form == "tar":
        write_tar(hostile.tree, path)
    else:
        path.mkdir(parents=True)
        write_dir(hostile.tree, path)
    tag = ":latest" if hostile.selector == "default" else ""
    store = Store(f"oci:../stores/{name}{tag}", f"stores/{name}", hostile)
    check(cli, tmp_path, store, record_property)


@pytest.mark.parametrize("case", list(DOCKER_CASES))
def test_hostile_docker_archive_fails_alone(
    cli: Cli, tmp_path: Path, record_property: Callable[[str, object], None], case: str
) -> None:
    hostile = DOCKER_CASES[case](DockerParts(hostile_image(gz=False)))
    path = cli.root / "stores" / "hostile-archive.tar"
    if hostile.raw is not None:
        path.parent.mkdir(parents=True)
        path.write_bytes(hostile.raw)
    else:
        write_tar(hostile.tree, path)
    tag = f":{DOCKER_TAG}" if hostile.selector == "default" else ""
    base = f"docker-archive:../stores/hostile-archive.tar{tag}"
    check(cli, tmp_path, Store(base, "stores/hostile-archive.tar", hostile), record_property)


def test_the_corpus_is_valid_when_unbroken(cli: Cli, tmp_path: Path) -> None:
    """The control: the unbroken layout (both forms) and archive apply, beside the good spec."""
    layout = OciParts(hostile_image()).tree()
    write_dir(layout, cli.root / "stores" / "ok-layout")
    write_tar(layout, cli.root / "stores" / "ok-layout.tar")
    write_tar(DockerParts(hostile_image(gz=False)).tree(), cli.root / "stores" / "ok.tar")
    bases = {
        "dir": "oci:../stores/ok-layout:latest",
        "tar": "oci:../stores/ok-layout.tar:latest",
        "archive": f"docker-archive:../stores/ok.tar:{DOCKER_TAG}",
    }
    for name, base in bases.items():
        cli.write_spec(
            f"{name}.yaml",
            f'base: "{base}"\nbaseAnnotations: false\ntargets: ["oci:../ok-{name}:1"]\n',
            spec_name=name,
        )
    good_setup(cli)
    run = run_reconciler(
        ["apply", str(cli.specs)], env=cli.env(), cwd=tmp_path, timeout=TIME_LIMIT * 3
    )
    assert run.code == 0, run.describe()
    assert not run_problems(run, "apply"), run.describe()
    digests = {name: tags_of(cli.root / f"ok-{name}").get("1") for name in bases}
    # A mirror gives the base's own digest: the layout's manifest; the archive's is written.
    assert digests["dir"] == digests["tar"] == hostile_image().digest, digests
    assert digests["archive"] is not None


# docker 25's `docker save` writes an OCI layout beside manifest.json; for an untagged image its
# index.json has `"manifests": null`. manifest.json is a docker archive's authority: an index.json
# that is no OCI index is passed over by `docker-archive:`, and refused by `oci:` on the same file.
INVALID_INDEXES: dict[str, bytes | None] = {
    "manifests-is-null": b'{"schemaVersion": 2, "mediaType": "%s", "manifests": null}'
    % OCI_INDEX.encode(),
    "manifests-is-a-string": b'{"schemaVersion": 2, "manifests": "none"}',
    "manifests-is-a-dict": b'{"schemaVersion": 2, "manifests": {"0": {}}}',
    "not-json": b"{this is not json",
    "a-list": b"[]",
    "100000-deep": nested_lists(DEPTH),
    "missing": None,
}


def docker25_archive(index: bytes | None) -> Tree:
    """A docker archive with an OCI layout marker beside manifest.json, and this index.json."""
    parts = DockerParts(hostile_image(gz=False))
    parts.extra["oci-layout"] = LAYOUT_MARKER
    if index is not None:
        parts.extra[INDEX] = index
    return parts.tree()


@pytest.mark.parametrize("case", list(INVALID_INDEXES))
def test_docker_archive_reads_past_an_invalid_index(cli: Cli, tmp_path: Path, case: str) -> None:
    write_tar(docker25_archive(INVALID_INDEXES[case]), cli.root / "stores" / "docker25.tar")
    write_tar(DockerParts(hostile_image(gz=False)).tree(), cli.root / "stores" / "plain.tar")
    for name in ("docker25", "plain"):
        cli.write_spec(
            f"{name}.yaml",
            f'base: "docker-archive:../stores/{name}.tar:{DOCKER_TAG}"\n'
            f'baseAnnotations: false\ntargets: ["oci:../out-{name}:1"]\n',
            spec_name=name,
        )
    env, cwd = cli.env(), tmp_path

    diff = run_reconciler(["diff", "-o", "json", str(cli.specs)], env=env, cwd=cwd, timeout=30)
    assert diff.code == 2, diff.describe()  # both out of sync, neither failed
    specs = {s["name"]: s for s in json.loads(diff.stdout)["specs"]}
    assert specs["docker25"]["state"] == "OutOfSync", specs["docker25"]
    assert specs["docker25"]["desired"] == specs["plain"]["desired"]

    applied = run_reconciler(["apply", str(cli.specs)], env=env, cwd=cwd, timeout=30)
    assert applied.code == 0, applied.describe()
    assert not run_problems(applied, "apply"), applied.describe()
    tag = tags_of(cli.root / "out-docker25").get("1")
    # The manifest written from manifest.json, the same as for the archive without a layout.
    assert tag is not None and tag == tags_of(cli.root / "out-plain").get("1")
    assert tag == specs["plain"]["desired"]


def test_oci_source_refuses_a_docker25_index(
    cli: Cli, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    hostile = Hostile(docker25_archive(INVALID_INDEXES["manifests-is-null"]), (INDEX,))
    write_tar(hostile.tree, cli.root / "stores" / "docker25.tar")
    store = Store("oci:../stores/docker25.tar:latest", "stores/docker25.tar", hostile)
    check(cli, tmp_path, store, record_property)
