"""Provenance (issue 23): every image a signed apply writes carries a signed SLSA Provenance v1
statement in its `.att` manifest. The tests' own witness (tests/support/provenance.py, which
imports nothing from reconciler) reads it from the real registry, verifies the DSSE signature,
validates the statement against the in-toto and SLSA schemas and checks each dependency's
digest against the registry and the files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import Cli, World
from tests.support import cosign, provenance
from tests.support.images import sha256
from tests.test_supply_chain import inspect_raw, signing_env

SECRET = "hunter2-" + uuid.uuid4().hex[:6]


def git(cli: Cli, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(cli.root), "-c", "user.name=t", "-c", "user.email=t@example.com",
         *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def specs_repository(cli: Cli) -> str:
    """cli.root as a git checkout whose origin URL carries credentials (as CI clones do)."""
    git(cli, "init", "-q")
    git(cli, "remote", "add", "origin", f"https://ci:{SECRET}@git.example.com/team/specs.git")
    git(cli, "add", "-A")
    git(cli, "commit", "-qm", "specs")
    return git(cli, "rev-parse", "HEAD")


def write_app(cli: Cli, world: World, repo: str, note: str = "") -> None:
    (cli.specs / "files").mkdir(exist_ok=True)
    (cli.specs / "files" / "motd").write_text("hello\n")
    a, b = world.a.host, world.b.host
    cli.write_spec(
        "app.yaml",
        f"""
        base: {a}/base/multi:1
        layers:
          - registry: {b}
            repository: vendor/runtime
            digest: {world.vendor_layer.digest}
          - path: files
        annotations: {{team: web}}
        targets: [{a}/{repo}:1]
        """
        + note,
        "app",
    )


def test_a_signed_apply_attests_every_image_and_the_no_op_only_heads(
    cli: Cli, world: World
) -> None:
    host = world.a.host
    key = cosign.generate_key()
    env = signing_env(cli, key, b"attest " + uuid.uuid4().hex.encode())
    repo = f"attested/{uuid.uuid4().hex[:8]}"
    write_app(cli, world, repo)
    commit = specs_repository(cli)

    planned = cli("diff", env_extra=env)
    assert planned.code == 2, planned.stderr
    assert "attestations of" in planned.stdout and "(SLSA v1; key " in planned.stdout

    mark = world.a.mark()
    applied = cli("apply", env_extra=env)
    assert applied.code == 0, applied.stderr
    first = world.a.requests(mark)
    root = inspect_raw(f"{host}/{repo}:1")
    digests = [sha256(root)] + [m["digest"] for m in json.loads(root)["manifests"]]
    base_digest = sha256(inspect_raw(f"{host}/base/multi:1"))
    spec_digest = hashlib.sha256((cli.specs / "app.yaml").read_bytes()).hexdigest()
    for digest in digests:  # the index and each child manifest
        (attestation,) = provenance.attestations(host, repo, digest, key)
        assert attestation.verified, attestation.envelope
        assert attestation.layer["annotations"]["predicateType"] == provenance.SLSA_V1
        statement = attestation.statement
        provenance.validate(statement)
        assert statement["subject"] == [
            {"name": f"{host}/{repo}", "digest": {"sha256": digest.split(":")[1]}}
        ]
        predicate = statement["predicate"]
        definition = predicate["buildDefinition"]
        assert definition["buildType"] == "https://reconciler.dev/buildtypes/imagespec/v1"
        assert definition["externalParameters"]["spec"] == {
            "path": "specs/app.yaml",
            "name": "app",
            "digest": {"sha256": spec_digest},
        }
        assert definition["externalParameters"]["source"] == {
            "repository": "https://git.example.com/team/specs.git",  # no credentials
            "commit": commit,
        }
        deps = {d["name"]: d for d in definition["resolvedDependencies"]}
        assert deps["base"] == {
            "uri": f"oci://{host}/base/multi:1",
            "name": "base",
            "digest": {"sha256": base_digest.split(":")[1]},
        }
        assert deps["spec"]["uri"] == (
            f"git+https://git.example.com/team/specs.git@{commit}#specs/app.yaml"
        )
        assert deps["spec"]["digest"] == {"sha256": spec_digest}
        assert predicate["runDetails"]["builder"]["id"] == "https://reconciler.dev/builder/v1"
        metadata = predicate["runDetails"]["metadata"]
        assert metadata["startedOn"] <= metadata["finishedOn"]
        assert metadata["invocationId"].startswith("urn:uuid:")
    # Each dependency's digest is what its source holds (the witness reads it there).
    index_statement = provenance.attestations(host, repo, digests[0], key)[0].statement
    deps_list = index_statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    layer = next(d for d in deps_list if d["name"] == "layer")
    assert layer["uri"] == f"oci://{world.b.host}/vendor/runtime"
    vendor = cosign.RegistryReader(world.b.host).blob("vendor/runtime", world.vendor_layer.digest)
    assert hashlib.sha256(vendor).hexdigest() == layer["digest"]["sha256"]
    path_layer = next(d for d in deps_list if d["name"] == "path layer")
    assert path_layer["uri"].endswith("#specs/files")
    child = json.loads(inspect_raw(f"{host}/{repo}@{digests[1]}"))
    assert "sha256:" + path_layer["digest"]["sha256"] == child["layers"][-1]["digest"]
    assert SECRET not in json.dumps(index_statement) + applied.stdout + applied.stderr

    # The no-op: nothing written, and one HEAD per `.att` tag on top of the signed no-op's;
    # and no `git` started (the commit is looked up only for a statement written).
    calls = cli.root / "git-calls"
    shim = cli.root / "shim"
    shim.mkdir()
    real = shutil.which("git")
    (shim / "git").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {real} "$@"\n')
    (shim / "git").chmod(0o755)
    counted = {**env, "PATH": f"{shim}:{os.environ['PATH']}"}
    mark = world.a.mark()
    noop = cli("apply", env_extra=counted)
    assert not calls.exists(), calls.read_text()
    assert noop.code == 0, noop.stderr
    seen = world.a.requests(mark)
    assert not [r for r in seen if r.method in ("PUT", "POST", "PATCH")], seen
    att = [r for r in seen if r.path.endswith(".att")]
    assert [r.method for r in att] == ["HEAD"] * len(digests), att
    assert not [r for r in seen if "/blobs/" in r.path], seen  # no statement read again
    print(
        f"\nsigned, attested apply: {len(first)} requests "
        f"({len([r for r in first if '.att' in r.path])} on .att tags); "
        f"its no-op: {len(seen)} requests ({len(att)} HEADs on .att tags)"
    )

    # A new commit that changes nothing of the image keeps every statement.
    (cli.root / "README").write_text("x\n")
    git(cli, "add", "-A")
    git(cli, "commit", "-qm", "docs")
    mark = world.a.mark()
    assert cli("apply", env_extra=env).code == 0
    assert not [r for r in world.a.requests(mark) if r.method in ("PUT", "POST", "PATCH")]


def test_a_changed_spec_replaces_our_statement_and_keeps_another_writer_s(
    cli: Cli, world: World
) -> None:
    host = world.a.host
    key, other = cosign.generate_key("ed25519"), cosign.generate_key()
    env = signing_env(cli, key, b"replace " + uuid.uuid4().hex.encode())
    repo = f"attested/{uuid.uuid4().hex[:8]}"
    cli.write_spec("one.yaml", f"base: {host}/base/single:1\ntargets: [{host}/{repo}:1]\n", "one")
    assert cli("apply", env_extra=env).code == 0
    digest = sha256(inspect_raw(f"{host}/{repo}:1"))
    cosign.push_attestation(world.a, repo, digest, other, predicate={"theirs": True})
    # Theirs replaced the .att tag: ours is gone there until the next apply puts it back.
    cli.write_spec(
        "one.yaml", f"# a comment\nbase: {host}/base/single:1\ntargets: [{host}/{repo}:1]\n", "one"
    )
    assert cli("apply", env_extra=env).code == 0
    found = provenance.attestations(host, repo, digest, key)
    ours = [a for a in found if a.verified]
    theirs = provenance.attestations(host, repo, digest, other)
    assert len(found) == 2 and len(ours) == 1, found
    assert [a.statement["predicate"] for a in theirs if a.verified] == [{"theirs": True}]
    spec_digest = hashlib.sha256((cli.specs / "one.yaml").read_bytes()).hexdigest()
    spec = ours[0].statement["predicate"]["buildDefinition"]["externalParameters"]["spec"]
    assert spec["digest"] == {"sha256": spec_digest}
    # The spec changes again: our statement is replaced, theirs kept, nothing piles up.
    cli.write_spec(
        "one.yaml", f"# two\nbase: {host}/base/single:1\ntargets: [{host}/{repo}:1]\n", "one"
    )
    assert cli("apply", env_extra=env).code == 0
    found = provenance.attestations(host, repo, digest, key)
    assert len(found) == 2 and sum(a.verified for a in found) == 1


@pytest.mark.parametrize("kind", ["ecdsa-p384", "rsa-2048", "ed25519"])
def test_each_key_kind_signs_a_statement_the_witness_verifies(
    cli: Cli, world: World, kind: cosign.KeyKind
) -> None:
    host = world.a.host
    key = cosign.generate_key(kind)
    env = signing_env(cli, key, b"kind " + uuid.uuid4().hex.encode())
    repo = f"attested/{kind}-{uuid.uuid4().hex[:6]}"
    cli.write_spec("k.yaml", f"base: {host}/base/single:1\ntargets: [{host}/{repo}:1]\n", "k")
    assert cli("apply", env_extra=env).code == 0
    digest = sha256(inspect_raw(f"{host}/{repo}:1"))
    (attestation,) = provenance.attestations(host, repo, digest, key)
    assert attestation.verified
    provenance.validate(attestation.statement)
    assert not provenance.attestations(host, repo, digest, cosign.generate_key(kind))[0].verified


def test_provenance_false_and_the_setting_turn_it_off(cli: Cli, world: World) -> None:
    host = world.a.host
    key = cosign.generate_key()
    env = signing_env(cli, key, b"off " + uuid.uuid4().hex.encode())
    repo = f"attested/off-{uuid.uuid4().hex[:6]}"
    cli.write_spec(
        "a.yaml", f"base: {host}/base/single:1\nprovenance: false\ntargets: [{host}/{repo}:a]\n"
    )
    assert cli("apply", env_extra=env).code == 0
    digest = sha256(inspect_raw(f"{host}/{repo}:a"))
    assert provenance.attestations(host, repo, digest, key) == []
    assert cosign.verified(
        cosign.verify_in_registry(host, repo, digest, key.public_pem(), f"{host}/{repo}")
    )
    config = cli.root / "settings.yaml"
    config.write_text(config.read_text() + "provenance:\n  enabled: false\n")
    cli.write_spec("a.yaml", f"base: {host}/base/multi:1\ntargets: [{host}/{repo}:b]\n")
    assert cli("apply", env_extra=env).code == 0
    assert provenance.attestations(host, repo, sha256(inspect_raw(f"{host}/{repo}:b")), key) == []


def attested_policy(cli: Cli, scope: str, key: cosign.KeyPair, **extra: object) -> Path:
    """A policy whose `scope` needs an SLSA provenance signed by `key` (and `extra`), the rest
    accepted: reconciler's `sigstoreAttested` extension."""
    pem = cli.root / "builder.pub"
    pem.write_bytes(key.public_pem())
    requirement = {"type": "sigstoreAttested", "keyPath": pem.name, **extra}
    policy = {
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {scope: [requirement]}},
    }
    path = cli.root / "attested-policy.json"
    path.write_text(json.dumps(policy))
    return path


def test_a_base_must_carry_the_provenance_the_policy_asks_for(cli: Cli, world: World) -> None:
    host = world.a.host
    builder = cosign.generate_key()
    env = signing_env(cli, builder, b"builder " + uuid.uuid4().hex.encode())
    run = uuid.uuid4().hex[:8]
    # The platform team's base, built and attested by reconciler itself.
    cli.write_spec(
        "base.yaml",
        f"base: {host}/base/single:1\nannotations: {{tier: base}}\n"
        f"targets: [{host}/attested-base/{run}:1]\n",
        "platform-base",
    )
    assert cli("apply", env_extra=env).code == 0
    (cli.specs / "base.yaml").unlink()

    scope = f"{host}/attested-base"
    app = f"{host}/attested-app/{run}"
    cli.write_spec("app.yaml", f"base: {host}/attested-base/{run}:1\ntargets: [{app}:1]\n", "app")
    policy = attested_policy(
        cli, scope, builder, builderIds=["https://reconciler.dev/builder/v1"],
        buildTypes=["https://reconciler.dev/buildtypes/imagespec/v1"],
    )  # fmt: skip
    plain = {"RECONCILER_TRUST_POLICY": str(policy)}
    accepted = cli("apply", env_extra=plain)
    assert accepted.code == 0, accepted.stdout + accepted.stderr

    # Another builder id: refused, naming the image, the scope and what it found.
    policy = attested_policy(cli, scope, builder, builderIds=["https://ci.example.com/x"])
    (cli.specs / "app.yaml").write_text((cli.specs / "app.yaml").read_text().replace(":1]", ":2]"))
    refused = cli("apply", env_extra=plain)
    assert refused.code == 1
    out = refused.stdout.replace(str(cli.specs), "specs")
    assert f"specs/app.yaml:6: spec.base: {host}/attested-base/{run}:1@sha256:" in out, out
    assert (
        f"policy scope {scope} wants an attestation of type https://slsa.dev/provenance/v1 "
        "signed by ECDSA P-256 key" in out
    ), out
    assert "but builder.id is 'https://reconciler.dev/builder/v1'" in out, out
    assert cosign.RegistryReader(host).manifest(f"attested-app/{run}", "2") is None

    # A base with no attestation at all, under a scope that asks for one.
    policy = attested_policy(cli, f"{host}/base/single", builder)
    cli.write_spec("app.yaml", f"base: {host}/base/single:1\ntargets: [{app}:3]\n", "app")
    bare = cli("apply", env_extra=plain)
    assert bare.code == 1
    assert "no attestation of type https://slsa.dev/provenance/v1 for sha256:" in bare.stdout
    assert cosign.RegistryReader(host).manifest(f"attested-app/{run}", "3") is None

    # A malformed .att (an index where cosign writes a manifest) fails this spec, named.
    digest = sha256(inspect_raw(f"{host}/attested-base/{run}:1"))
    index = json.dumps({"schemaVersion": 2, "mediaType": cosign.OCI_INDEX, "manifests": []})
    cosign.RegistryReader(host).put_manifest(
        f"attested-base/{run}", cosign.signature_tag(digest, "att"), index.encode(),
        cosign.OCI_INDEX,
    )  # fmt: skip
    policy = attested_policy(cli, scope, builder)
    cli.write_spec("app.yaml", f"base: {host}/attested-base/{run}:1\ntargets: [{app}:4]\n", "app")
    broken = cli("apply", env_extra=plain)
    assert broken.code == 1 and "Traceback" not in broken.stderr, broken.stderr
    out = broken.stdout.replace(str(cli.specs), "specs")
    assert f"specs/app.yaml:6: spec.base: {host}/attested-base/{run}:1@sha256:" in out, out
    assert "an index where a signature manifest was expected" in out, out


def test_an_attached_sbom_is_also_a_signed_attestation(cli: Cli, world: World) -> None:
    host = world.a.host
    key = cosign.generate_key()
    env = signing_env(cli, key, b"sbom " + uuid.uuid4().hex.encode())
    repo = f"attested/sbom-{uuid.uuid4().hex[:6]}"
    sbom = {"spdxVersion": "SPDX-2.3", "name": "app", "packages": [{"name": "libc"}]}
    (cli.specs / "sbom.spdx.json").write_text(json.dumps(sbom))
    (cli.specs / "notes.txt").write_text("not an SBOM\n")
    cli.write_spec(
        "app.yaml",
        f"""
        base: {host}/base/single:1
        attach:
          - file: sbom.spdx.json
            artifactType: application/spdx+json
          - file: notes.txt
            artifactType: text/plain
        targets: [{host}/{repo}:1]
        """,
        "app",
    )
    assert cli("apply", env_extra=env).code == 0
    digest = sha256(inspect_raw(f"{host}/{repo}:1"))
    found = provenance.attestations(host, repo, digest, key)
    assert sorted(a.statement["predicateType"] for a in found) == [
        "https://slsa.dev/provenance/v1",
        "https://spdx.dev/Document",
    ]
    (spdx,) = [a for a in found if a.statement["predicateType"] == "https://spdx.dev/Document"]
    assert spdx.verified and spdx.statement["predicate"] == sbom
    assert spdx.layer["annotations"]["predicateType"] == "https://spdx.dev/Document"
    provenance.statement_schema_check(spdx.statement)
    mark = world.a.mark()
    assert cli("apply", env_extra=env).code == 0
    assert not [r for r in world.a.requests(mark) if r.method in ("PUT", "POST", "PATCH")]

    # The SBOM changes: its statement is replaced, the provenance's too (the file is a
    # dependency of neither, but the spec's attach did not change: only the SBOM moves).
    sbom["packages"].append({"name": "openssl"})
    (cli.specs / "sbom.spdx.json").write_text(json.dumps(sbom))
    assert cli("apply", env_extra=env).code == 0
    digest = sha256(inspect_raw(f"{host}/{repo}:1"))
    found = provenance.attestations(host, repo, digest, key)
    spdx_now = [a for a in found if a.statement["predicateType"] == "https://spdx.dev/Document"]
    assert [a.statement["predicate"] for a in spdx_now] == [sbom]
