"""A team's first week (issue 22): errors about a source or a target name the spec file, line
and field, and the reference; a missing base says whether the repository or the tag is."""

from __future__ import annotations

import re
import socket
import uuid

from tests.conftest import Cli, World


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_missing_base_says_which_is_missing_and_where(cli: Cli, world: World) -> None:
    """Before: `! base image .../library/pyhton:3.12-slim not found`, no file, no line, and
    not whether the repository or the tag is missing."""
    a = world.a.host
    target = f"{a}/first-week/{uuid.uuid4().hex[:8]}:1"
    cli.write_spec("repo.yaml", f"base: {a}/library/pyhton:3.12-slim\ntargets: [{target}]", "repo")
    cli.write_spec("tag.yaml", f"base: {a}/base/single:3.12-slim\ntargets: [{target}-b]", "tag")
    result = cli("diff")
    assert result.code == 1
    out = result.stdout
    assert (
        f"specs/repo.yaml:6: spec.base: {a}/library/pyhton:3.12-slim not found: {a} has no "
        "repository library/pyhton" in out.replace(str(cli.specs), "specs")
    ), out
    assert (
        f"specs/tag.yaml:6: spec.base: {a}/base/single:3.12-slim not found: base/single has no "
        "tag 3.12-slim (1 tag, none close)" in out.replace(str(cli.specs), "specs")
    ), out


def test_a_target_that_refuses_names_the_spec_line_and_target(cli: Cli, world: World) -> None:
    """Before: `! ConnectError: 127.0.0.1:5999 refused the connection`, no spec, no target."""
    port = free_port()
    cli.write_spec(
        "app.yaml",
        f"base: {world.a.host}/base/single:1\ntargets:\n  - {world.a.host}/ok/app:1\n"
        f"  - 127.0.0.1:{port}/team/app:1",
    )
    result = cli("diff")
    assert result.code == 1
    out = result.stdout.replace(str(cli.specs), "specs")
    assert f"specs/app.yaml:7: spec.targets[1]: ConnectError: 127.0.0.1:{port} refused" in out, out


def test_text_output_speaks_json_s_words_with_short_digests(cli: Cli, world: World) -> None:
    """Before: blobs were `generated` / `mount-from` / `copy-from` in text and `upload` /
    `mount from` in markdown, digests whole (lines of about 200 characters), and `apply` printed
    the whole plan again after applying."""
    a, b = world.a.host, world.b.host
    run = uuid.uuid4().hex[:8]
    cli.write_spec(
        "app.yaml",
        f"base: {a}/base/single:1\nannotations: {{run: '{run}'}}\n"
        f"config: {{labels: {{run: '{run}'}}}}\n"
        f"targets: [{a}/first-week/{run}:1, {b}/first-week/{run}:1]",
        "app",
    )
    diff = cli("diff")
    assert diff.code == 2, diff.stderr
    blobs = [line for line in diff.stdout.splitlines() if line.startswith("  + blob")]
    hows = {re.sub(r".*  \d[\d.]* (?:B|KiB|MiB)  (.*?)  \(.*", r"\1", line) for line in blobs}
    assert {"upload", "mount from base/single", f"copy from {a}/base/single"} <= hows, blobs
    assert "generated" not in diff.stdout and "-from" not in diff.stdout
    assert "upload)" in diff.stdout.splitlines()[-1]
    assert not re.search(r"sha256:[0-9a-f]{13}", diff.stdout), diff.stdout
    assert max(len(line) for line in blobs) < 150  # 192 with whole digests

    applied = cli("apply")
    assert applied.code == 0, applied.stderr
    (header,) = applied.stdout.splitlines()[:1]
    assert re.fullmatch(
        r"app \(.*app\.yaml\): Synced, 2 tags at sha256:[0-9a-f]{12} \(applied: .*\)", header
    ), header
    assert "+ blob" not in applied.stdout and "+ manifest" not in applied.stdout

    cli.write_spec(
        "app.yaml",
        f"base: {a}/base/single:1\nannotations: {{run: '{run}-2'}}\n"
        f"targets: [{a}/first-week/{run}:1]",
        "app",
    )
    verbose = cli("-v", "apply")
    assert verbose.code == 0, verbose.stderr
    assert re.search(
        r"^  ~ tag .* sha256:[0-9a-f]{64} -> sha256:[0-9a-f]{64}$", verbose.stdout, re.M
    )
