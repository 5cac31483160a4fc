"""Lock files against a real registry: lock, a base tag moved by skopeo, --check, apply with the
lock, --update; and a lock that does not cover a spec's base."""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path

from tests.conftest import Cli, World
from tests.support.images import skopeo

SRC = "--src-tls-verify=false"
DEST = "--dest-tls-verify=false"


def seed_base(world: World, source: str) -> str:
    """A fresh base repository on registry a whose tag `1` names `source`'s image."""
    repo = f"base/lock-{uuid.uuid4().hex[:8]}"
    skopeo("copy", "--all", "--preserve-digests", SRC, DEST,
           f"docker://{world.a.host}/{source}", f"docker://{world.a.host}/{repo}:1")  # fmt: skip
    return f"{world.a.host}/{repo}:1"


def digest_of(world: World, reference: str) -> str:
    out = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reference}")
    return "sha256:" + hashlib.sha256(out.encode()).hexdigest()


def test_lock_check_apply_update(cli: Cli, world: World) -> None:
    base = seed_base(world, "base/multi:1")
    target = f"{world.a.host}/team/locked-{uuid.uuid4().hex[:8]}:1"
    cli.write_spec("web.yaml", f"base: {base}\nannotations: {{team: web}}\ntargets: [{target}]\n")

    locked = cli("lock")
    assert locked.code == 0, locked.stderr
    lock_file = cli.specs / "reconciler.lock"
    text = lock_file.read_text()
    first = digest_of(world, base)
    assert f'reference: "{base}"' in text and f"digest: {first}" in text
    assert '["linux/amd64", "linux/arm64/v8"]' in text
    assert "locked:" in locked.stdout and "wrote" in locked.stdout
    assert cli("lock").stdout.rstrip().endswith("wrote nothing (already as it should be).")
    assert lock_file.read_text() == text  # stable: a second run writes the same bytes

    assert cli("lock", "--check").code == 0
    applied = cli("apply")
    assert applied.code == 0, applied.stdout + applied.stderr

    # The base tag moves upstream (as a new release would), with no commit.
    skopeo("copy", "--all", "--preserve-digests", SRC, DEST,
           f"docker://{world.a.host}/base/single:1", f"docker://{base}")  # fmt: skip
    moved = digest_of(world, base)
    assert moved != first
    check = cli("lock", "--check")
    assert check.code == 2, check.stdout + check.stderr
    assert re.search(rf"~ {re.escape(base)} moved: {first[:19]}\S* -> {moved[:19]}", check.stdout)
    assert "Lock stale: 1 moved" in check.stdout
    assert lock_file.read_text() == text  # --check writes nothing

    # With the lock, the desired state is the repository's: nothing to push, nothing new, and
    # a no-op costs one HEAD per target tag; the base's tag is not asked at all.
    mark = world.a.mark()
    diff = cli("diff", "-o", "json")
    assert diff.code == 0, diff.stdout + diff.stderr
    sent = world.a.requests(since=mark)
    assert [(r.method, r.path) for r in sent] == [
        ("HEAD", f"/v2/{target.split('/', 1)[1].rsplit(':', 1)[0]}/manifests/1")
    ]
    assert cli("apply").code == 0

    updated = cli("lock", "--update", "web")
    assert updated.code == 0, updated.stderr
    assert f"digest: {moved}" in lock_file.read_text()
    assert cli("diff").code == 2  # now the spec follows the moved base
    assert cli("apply").code == 0
    assert cli("diff").code == 0


def test_a_base_the_lock_does_not_cover_is_an_error_with_file_and_line(
    cli: Cli, world: World
) -> None:
    base = seed_base(world, "base/single:1")
    target = f"{world.a.host}/team/uncovered-{uuid.uuid4().hex[:8]}:1"
    cli.write_spec("app.yaml", f"base: {base}\ntargets: [{target}]\n")
    assert cli("lock").code == 0
    other = seed_base(world, "base/single:1")
    cli.write_spec("app.yaml", f"base: {other}\ntargets: [{target}]\n")
    diff = cli("diff")
    assert diff.code == 1
    assert re.search(r"app\.yaml:4: spec\.base: .* is not in .*reconciler\.lock", diff.stdout)
    check = cli("lock", "--check")
    assert (
        check.code == 2 and "not in the lock" in check.stdout and "no spec uses it" in check.stdout
    )


def test_a_malformed_lock_names_file_line_and_field(cli: Cli, world: World) -> None:
    base = seed_base(world, "base/single:1")
    cli.write_spec("app.yaml", f"base: {base}\ntargets: [{world.a.host}/team/x:1]\n")
    (cli.specs / "reconciler.lock").write_text(
        "apiVersion: reconciler.dev/v1alpha1\nkind: Lock\nbases:\n"
        f"  - reference: {base}\n    digest: sha256:nope\n    resolved: now\n"
    )
    for command in (("diff",), ("lock", "--check")):
        result = cli(*command)
        assert result.code == 1
        assert re.search(r"reconciler\.lock:5: bases\[0\]\.digest", result.stdout + result.stderr)
        assert "Traceback" not in result.stderr


def test_a_lock_selection_is_checked_when_read(tmp_path: Path) -> None:
    from reconciler.errors import SpecError
    from reconciler.lockfile import read_lock

    head = "apiVersion: reconciler.dev/v1alpha1\nkind: Lock\nbases: []\nfanOut:\n"
    cases = {
        "twice": '  - {spec: a, tags: ["1"]}\n  - {spec: a, tags: ["2"]}\n',
        "a bad tag": '  - {spec: a, tags: ["x{spec.name}"]}\n',
        "no tag": "  - {spec: a, tags: []}\n",
    }
    for name, body in cases.items():
        path = tmp_path / f"{name}.lock"
        path.write_text(head + body)
        try:
            read_lock(path)
        except SpecError as exc:
            assert str(exc).startswith(f"{path}:"), exc
            assert "fanOut[" in str(exc), exc
        else:
            raise AssertionError(f"{name}: accepted")


def test_the_lock_covers_layer_image_tags(cli: Cli, world: World) -> None:
    """Issue 22, point 3. Before: moving the tag of a layer's `image:` left `Lock up to date`,
    exit 0. Every tag a spec resolves is in the lock, and --check names the one that moved."""
    import json

    base = seed_base(world, "base/multi:1")
    source = seed_base(world, "base/single:1")  # the image the layer comes from, by tag
    repository = source.rpartition(":")[0]
    layer = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{source}"))
    digest = layer["layers"][0]["digest"]
    target = f"{world.a.host}/team/layered-{uuid.uuid4().hex[:8]}:1"
    cli.write_spec(
        "web.yaml",
        f"base: {base}\nlayers:\n  - ref: {repository}@{digest}\n    image: {source}\n"
        f"targets: [{target}]\n",
    )
    locked = cli("lock")
    assert locked.code == 0, locked.stdout + locked.stderr
    text = (cli.specs / "reconciler.lock").read_text()
    first = digest_of(world, source)
    assert f'reference: "{source}"' in text and f"digest: {first}" in text
    assert cli("lock", "--check").code == 0

    skopeo("copy", "--all", "--preserve-digests", SRC, DEST,
           f"docker://{world.a.host}/base/multi:1", f"docker://{source}")  # fmt: skip
    moved = digest_of(world, source)
    check = cli("lock", "--check")
    assert check.code == 2, check.stdout + check.stderr
    assert re.search(rf"~ {re.escape(source)} moved: {first[:19]}\S* -> {moved[:19]}", check.stdout)
    updated = cli("lock", "--update")
    assert updated.code == 0 and f"digest: {moved}" in (cli.specs / "reconciler.lock").read_text()

    # A lock without the layer's entry, with a trust policy (which resolves layers' images):
    # the spec fails naming the field, as for a base the lock does not cover.
    (cli.specs / "reconciler.lock").write_text(text.replace(source, f"{source}-gone"))
    policy = cli.root / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    result = cli("diff", env_extra={"RECONCILER_TRUST_POLICY": str(policy)})
    assert result.code == 1
    assert "spec.layers[0].image" in result.stdout and "is not in" in result.stdout, result.stdout


def test_lock_says_what_it_did_after_an_error_and_what_a_named_update_shares(
    cli: Cli, world: World
) -> None:
    """Before: `Lock: no change; ...; wrote nothing (already as it should be).` after an error
    (exit 1), and `lock --update web` moved the entry api shares without a word."""
    base = seed_base(world, "base/multi:1")
    run = uuid.uuid4().hex[:8]
    for name in ("web", "api"):
        target = f"{world.a.host}/team/{name}-{run}:1"
        cli.write_spec(f"{name}.yaml", f"base: {base}\ntargets: [{target}]\n", name)
    assert cli("lock").code == 0
    skopeo("copy", "--all", "--preserve-digests", SRC, DEST,
           f"docker://{world.a.host}/base/single:1", f"docker://{base}")  # fmt: skip
    updated = cli("lock", "--update", "web")
    assert updated.code == 0, updated.stderr
    assert re.search(rf"~ {re.escape(base)} moved: .* \(shared: this moves api too\)$",
                     updated.stdout, re.M), updated.stdout  # fmt: skip

    cli.write_spec("gone.yaml", f"base: {world.a.host}/base/absent-{run}:1\ntargets: "
                   f"[{world.a.host}/team/gone-{run}:1]\n", "gone")  # fmt: skip
    before = (cli.specs / "reconciler.lock").read_text()
    failed = cli("lock")
    assert failed.code == 1
    last = failed.stdout.rstrip().splitlines()[-1]
    assert "1 error" in last and "already as it should be" not in last, last
    assert last.endswith("wrote nothing; a lock file with an error is left as it was."), last
    assert (cli.specs / "reconciler.lock").read_text() == before
    check = cli("lock", "--check")
    assert check.code == 1
    assert "Lock not checked whole: 1 error; 1 entry in 1 lock file." in check.stdout, check.stdout
