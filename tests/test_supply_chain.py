"""Supply-chain trust end to end: verify bases, sign outputs, carry signatures and referrers,
attach files. The witness is tests/support/cosign.py (written from cosign's published format,
never from reconciler's code) and skopeo; the registries are real."""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import Cli, World
from tests.support import cosign
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import inspect_raw, sha256, skopeo

MATCH_REPOSITORY = {"type": "matchRepository"}


def fresh_base(world: World, name: str) -> tuple[str, str]:
    """A copy of the single-platform base in a repository of its own: (repository, digest)."""
    repo = f"trust/{name}-{uuid.uuid4().hex[:8]}/base"
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--preserve-digests",
        f"docker://{world.a.host}/base/single:1",
        f"docker://{world.a.host}/{repo}:1",
    )
    return repo, sha256(inspect_raw(f"{world.a.host}/{repo}:1"))


def write_policy(cli: Cli, world: World, repo: str, key: cosign.KeyPair, name: str) -> Path:
    """A containers-policy.json: the repository must be signed by `key`; the rest accepted."""
    pem = cli.root / f"{name}.pub"
    pem.write_bytes(key.public_pem())
    policy = {
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {
            "docker": {
                f"{world.a.host}/{repo}": [
                    {
                        "type": "sigstoreSigned",
                        "keyPath": pem.name,
                        "signedIdentity": MATCH_REPOSITORY,
                    }
                ]
            }
        },
    }
    path = cli.root / f"{name}-policy.json"
    path.write_text(json.dumps(policy))
    return path


def two_specs(cli: Cli, world: World, repo: str) -> tuple[str, str]:
    """`guarded` builds on the signed base; `other` on an unguarded one. Their targets."""
    host = world.a.host
    out = f"out/{uuid.uuid4().hex[:8]}"
    guarded, other = f"{host}/{out}/guarded:1", f"{host}/{out}/other:1"
    cli.write_spec(
        "guarded.yaml",
        f"""
        base: {host}/{repo}:1
        annotations: {{team: a}}
        targets: [{guarded}]
        """,
    )
    cli.write_spec(
        "other.yaml",
        f"""
        base: {host}/base/single:1
        annotations: {{team: b}}
        targets: [{other}]
        """,
    )
    return guarded, other


def exists(reference: str) -> bool:
    try:
        inspect_raw(reference)
    except AssertionError:
        return False
    return True


def states(result_json: dict[str, object]) -> dict[str, str]:
    specs = result_json["specs"]
    assert isinstance(specs, list)
    return {s["name"]: s["state"] for s in specs}


def errors(result_json: dict[str, object]) -> dict[str, str]:
    specs = result_json["specs"]
    assert isinstance(specs, list)
    return {s["name"]: s.get("error") or "" for s in specs}


def test_a_signed_base_applies_with_the_right_key_and_the_no_op_asks_no_signature(
    cli: Cli, world: World
) -> None:
    repo, digest = fresh_base(world, "signed")
    key = cosign.generate_key()
    cosign.sign_in_registry(world.a, repo, digest, key, f"{world.a.host}/{repo}")
    policy = write_policy(cli, world, repo, key, "right")
    guarded, other = two_specs(cli, world, repo)
    env = {"RECONCILER_TRUST_POLICY": str(policy)}

    result = cli("apply", "-o", "json", env_extra=env)
    assert result.code == 0, result.stderr
    assert states(result.json()) == {"guarded": "Synced", "other": "Synced"}
    assert exists(guarded) and exists(other)

    # The verdict is cached by digest and key: a no-op sends no signature request at all.
    mark = world.a.mark()
    again = cli("apply", "-o", "json", env_extra=env)
    assert again.code == 0, again.stderr
    seen = world.a.requests(mark)
    assert not [r for r in seen if ".sig" in r.path], seen
    assert not [r for r in seen if r.method in ("PUT", "POST", "PATCH", "DELETE")]


@pytest.mark.parametrize("case", ["other-key", "other-digest", "other-identity", "unsigned"])
def test_an_untrusted_base_fails_its_spec_only_and_nothing_is_pushed(
    cli: Cli, world: World, case: str
) -> None:
    repo, digest = fresh_base(world, case)
    key, wrong = cosign.generate_key(), cosign.generate_key()
    host = world.a.host
    if case == "other-key":
        cosign.sign_in_registry(world.a, repo, digest, wrong, f"{host}/{repo}")
    elif case == "other-digest":
        # A valid signature by the right key, but over another image's digest.
        payload = cosign.simple_signing_payload(f"{host}/{repo}", "sha256:" + "1" * 64)
        entry = cosign.SignatureEntry.signed(payload, cosign.sign(key.private, payload))
        manifest, config, blobs = cosign.signature_manifest([entry])
        cosign.push_tagged(
            world.a,
            repo,
            cosign.signature_tag(digest),
            manifest,
            cosign.OCI_MANIFEST,
            [config, *blobs],
        )
    elif case == "other-identity":
        cosign.sign_in_registry(world.a, repo, digest, key, f"{host}/someone/else")
    policy = write_policy(cli, world, repo, key, case)
    guarded, other = two_specs(cli, world, repo)

    result = cli("apply", "-o", "json", env_extra={"RECONCILER_TRUST_POLICY": str(policy)})
    assert result.code == 1, result.stderr
    report = result.json()
    assert states(report) == {"guarded": "Failed", "other": "Synced"}
    message = errors(report)["guarded"]
    assert f"{host}/{repo}:1" in message  # which image
    assert f"{host}/{repo}" in message and "scope" in message  # which scope
    expected = {
        "other-key": "signed by an unknown ECDSA P-256 key",
        "other-digest": "sha256:" + "1" * 12,
        "other-identity": "someone/else",
        "unsigned": "no signature",
    }[case]
    assert expected in message, message
    assert not exists(guarded)  # nothing of the failed spec was pushed
    assert exists(other)
    assert "PRIVATE" not in result.stdout + result.stderr


def signing_env(cli: Cli, key: cosign.KeyPair, passphrase: bytes) -> dict[str, str]:
    """Settings with an encrypted cosign key whose passphrase is in a file."""
    key_file = cli.root / "cosign.key"
    key_file.write_bytes(key.encrypted_pem(passphrase))
    secret = cli.root / "passphrase"
    secret.write_bytes(passphrase + b"\n")
    config = cli.root / "settings.yaml"
    config.write_text(f"signing:\n  key_file: {key_file}\n  passphrase_file: {secret}\n")
    return {"RECONCILER_CONFIG": str(config)}


def test_apply_signs_every_manifest_it_writes_keeps_other_signers_and_the_no_op_only_heads(
    cli: Cli, world: World
) -> None:
    host = world.a.host
    key, other_signer = cosign.generate_key(), cosign.generate_key("ecdsa-p384")
    passphrase = b"correct horse " + uuid.uuid4().hex.encode()
    env = signing_env(cli, key, passphrase)
    repo = f"signed/{uuid.uuid4().hex[:8]}/app"
    cli.write_spec(
        "app.yaml",
        f"""
        base: {host}/base/multi:1
        annotations: {{signed: "yes"}}
        targets: [{host}/{repo}:1]
        """,
    )

    planned = cli("diff", env_extra=env)
    assert planned.code == 2, planned.stderr
    assert "signature" in planned.stdout and ".sig" in planned.stdout

    mark = world.a.mark()
    applied = cli("apply", env_extra=env)
    assert applied.code == 0, applied.stderr
    first = world.a.requests(mark)
    root = inspect_raw(f"{host}/{repo}:1")
    digests = [sha256(root)] + [m["digest"] for m in json.loads(root)["manifests"]]
    for digest in digests:  # the index and each child manifest
        reasons = cosign.verify_in_registry(host, repo, digest, key.public_pem(), f"{host}/{repo}")
        assert cosign.verified(reasons), reasons
        raw = json.loads(inspect_raw(f"{host}/{repo}:{cosign.signature_tag(digest)}"))
        assert raw["mediaType"] == cosign.OCI_MANIFEST
        assert [layer["mediaType"] for layer in raw["layers"]] == [cosign.SIMPLE_SIGNING]
    # The witness refuses the wrong key and another repository's identity.
    wrong = cosign.verify_in_registry(
        host, repo, digests[0], other_signer.public_pem(), f"{host}/{repo}"
    )
    assert not cosign.verified(wrong)
    elsewhere = cosign.verify_in_registry(
        host, repo, digests[0], key.public_pem(), f"{host}/another/repo"
    )
    assert not cosign.verified(elsewhere)

    # A second signer adds theirs; a new target tag makes us sign again, keeping theirs.
    cosign.sign_in_registry(world.a, repo, digests[0], other_signer, f"{host}/{repo}")
    cli.write_spec(
        "app.yaml",
        f"""
        base: {host}/base/multi:1
        annotations: {{signed: "yes"}}
        targets: [{host}/{repo}:1, {host}/{repo}:2]
        """,
    )
    second = cli("apply", env_extra=env)
    assert second.code == 0, second.stderr
    assert cosign.verified(
        cosign.verify_in_registry(
            host, repo, digests[0], other_signer.public_pem(), f"{host}/{repo}"
        )
    )
    entries = cosign.existing_entries(world.a, repo, cosign.signature_tag(digests[0]))
    identities = sorted(
        json.loads(e.payload)["critical"]["identity"]["docker-reference"] for e in entries
    )
    assert identities == sorted([f"{host}/{repo}:1", f"{host}/{repo}", f"{host}/{repo}:2"])

    # No-op: no signature upload, and at most one HEAD per signed manifest on the .sig tags.
    mark = world.a.mark()
    noop = cli("apply", env_extra=env)
    assert noop.code == 0, noop.stderr
    seen = world.a.requests(mark)
    assert not [r for r in seen if r.method in ("PUT", "POST", "PATCH")], seen
    sig = [r for r in seen if ".sig" in r.path]
    assert sig and all(r.method == "HEAD" for r in sig), sig
    assert len(sig) == len(digests)
    print(  # figures for docs/trust.md: a 2-platform index, one target tag, signed
        f"\nsigned apply: {len(first)} requests "
        f"({len([r for r in first if '.sig' in r.path])} on .sig tags); "
        f"signed no-op (two tags): {len(seen)} requests ({len(sig)} HEADs on .sig tags)"
    )
    assert passphrase.decode() not in noop.stdout + noop.stderr + second.stderr


def test_signing_images_already_pushed_counts_signatures_as_artifacts(
    cli: Cli, world: World
) -> None:
    """Before: a signed apply that moved no image tag said `20 manifests, 20 tags`: the
    signatures' manifests and tags were counted as the image's."""
    host = world.a.host
    repo = f"signed/{uuid.uuid4().hex[:8]}/late"
    cli.write_spec("app.yaml", f"base: {host}/base/multi:1\ntargets: [{host}/{repo}:1]\n")
    unsigned = json.loads(cli("apply", "-o", "json").stdout)["summary"]
    assert (unsigned["manifestsPushed"], unsigned["tagsSet"]) == (3, 1)  # index + 2 children
    assert unsigned["artifactsWritten"] == 0

    env = signing_env(cli, cosign.generate_key(), b"late " + uuid.uuid4().hex.encode())
    signed = cli("apply", "-o", "json", env_extra=env)
    assert signed.code == 0, signed.stderr
    document = json.loads(signed.stdout)
    summary = document["summary"]
    assert (summary["manifestsPushed"], summary["tagsSet"]) == (0, 0), summary
    assert summary["artifactsWritten"] == 6, summary  # one .sig and one .att per manifest
    assert document["specs"][0]["applied"]["artifacts"] == 6
    cli.write_spec(
        "app.yaml", f"base: {host}/base/multi:1\ntargets: [{host}/{repo}:1, {host}/{repo}:2]\n"
    )
    text = cli("apply", env_extra=env)
    assert text.code == 0, text.stderr
    # The new tag is a new identity in each manifest's signature, and a changed spec file in
    # each provenance statement: 6 artifacts written again.
    assert "; 0 manifests, 1 tag, 6 artifacts;" in text.stdout.splitlines()[-1], text.stdout
    assert "6 artifacts (signatures, attestations, referrers) written)" in text.stdout


def test_a_wrong_passphrase_is_a_clear_error_that_never_shows_the_secret(
    cli: Cli, world: World
) -> None:
    host = world.a.host
    key = cosign.generate_key()
    env = signing_env(cli, key, b"the right one")
    (cli.root / "passphrase").write_bytes(b"not-the-right-one-" + b"x" * 8)
    cli.write_spec(
        "app.yaml",
        f"""
        base: {host}/base/single:1
        annotations: {{signed: "no"}}
        targets: [{host}/signed/{uuid.uuid4().hex[:8]}/app:1]
        """,
    )
    result = cli("apply", env_extra=env)
    assert result.code == 1
    assert "passphrase" in result.stdout + result.stderr
    assert "cosign.key" in result.stdout + result.stderr
    assert "not-the-right-one" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_mirror_carries_signatures_attestations_sboms_and_referrers(
    cli: Cli, world: World
) -> None:
    repo, digest = fresh_base(world, "carried")
    a, b = world.a.host, world.b.host
    key = cosign.generate_key()
    cosign.sign_in_registry(world.a, repo, digest, key, f"{a}/{repo}")
    cosign.push_attestation(world.a, repo, digest, key)
    cosign.push_sbom(world.a, repo, digest, b'{"spdxVersion": "SPDX-2.3"}')
    _index, referrers = cosign.push_referrers_fallback(
        world.a,
        repo,
        digest,
        [
            cosign.Artifact("application/spdx+json", b'{"sbom": 1}'),
            cosign.Artifact("application/vnd.example.scan+json", b'{"scan": 1}'),
        ],
    )
    target_repo = f"mirror/{uuid.uuid4().hex[:8]}"
    layout = cli.root / "layout"
    mirror = cli.write_spec(
        "mirror.yaml",
        f"""
        base: {a}/{repo}:1
        baseAnnotations: false
        carry:
          artifactTypes: [application/spdx+json]
        targets: [{b}/{target_repo}:1, "oci:{layout}:1"]
        """,
    )
    result = cli("apply", env_extra={})
    assert result.code == 0, result.stderr + result.stdout
    assert sha256(inspect_raw(f"{b}/{target_repo}:1")) == digest
    for suffix in ("sig", "att", "sbom"):
        tag = cosign.signature_tag(digest, suffix)
        assert sha256(inspect_raw(f"{b}/{target_repo}:{tag}")) == sha256(
            inspect_raw(f"{a}/{repo}:{tag}")
        )
    # The signature still verifies at the mirror (it names the source repository).
    assert cosign.verified(
        cosign.verify_in_registry(b, target_repo, digest, key.public_pem(), f"{a}/{repo}")
    )
    assert cosign.verified(cosign.verify_layout(layout, digest, key.public_pem(), f"{a}/{repo}"))
    fallback = json.loads(inspect_raw(f"{b}/{target_repo}:{cosign.signature_tag(digest, None)}"))
    assert [m["artifactType"] for m in fallback["manifests"]] == ["application/spdx+json"]
    assert fallback["manifests"][0]["digest"] == referrers[0]

    # An oci: base read back from that layout verifies against the carried signature.
    policy = cli.root / "layout-policy.json"
    (cli.root / "k.pub").write_bytes(key.public_pem())
    policy.write_text(
        json.dumps(
            {
                "default": [
                    {
                        "type": "sigstoreSigned",
                        "keyPath": "k.pub",
                        "signedIdentity": {
                            "type": "exactRepository",
                            "dockerRepository": f"{a}/{repo}",
                        },
                    }
                ]
            }
        )
    )
    from_layout = cli.write_spec(
        "from-layout.yaml",
        f"""
        base: "oci:{layout}:1"
        annotations: {{from: layout}}
        targets: [{b}/{target_repo}-built:1]
        """,
    )
    built = cli("apply", str(from_layout), env_extra={"RECONCILER_TRUST_POLICY": str(policy)})
    assert built.code == 0, built.stderr + built.stdout
    assert exists(f"{b}/{target_repo}-built:1")

    # `save` stores them in the archive's layout too; an oci: base on the archive verifies.
    archive = cli.root / "mirror.tar"
    saved = cli("save", str(mirror), "-o", str(archive))
    assert saved.code == 0, saved.stderr
    unpacked = cli.root / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(unpacked)], check=True)
    assert cosign.verified(cosign.verify_layout(unpacked, digest, key.public_pem(), f"{a}/{repo}"))
    from_archive = cli.write_spec(
        "from-archive.yaml",
        f"""
        base: "oci:{archive}:1"
        annotations: {{from: archive}}
        targets: [{b}/{target_repo}-from-archive:1]
        """,
    )
    env = {"RECONCILER_TRUST_POLICY": str(policy)}
    assert cli("apply", str(from_archive), env_extra=env).code == 0
    # And a key the archive's signatures do not match fails that spec.
    (cli.root / "k.pub").write_bytes(cosign.generate_key().public_pem())
    refused = cli("apply", str(from_archive), env_extra=env)
    assert refused.code == 1 and "not trusted" in refused.stdout, refused.stdout


def test_attach_pushes_a_referrer_with_a_fallback_tag(cli: Cli, world: World) -> None:
    host = world.a.host
    repo = f"attached/{uuid.uuid4().hex[:8]}"
    (cli.specs / "sbom.spdx.json").write_text('{"spdxVersion": "SPDX-2.3", "name": "app"}')
    cli.write_spec(
        "app.yaml",
        f"""
        base: {host}/base/single:1
        annotations: {{attached: "yes"}}
        attach:
          - file: sbom.spdx.json
            artifactType: application/spdx+json
        targets: [{host}/{repo}:1]
        """,
    )
    result = cli("apply")
    assert result.code == 0, result.stderr + result.stdout
    digest = sha256(inspect_raw(f"{host}/{repo}:1"))
    index = json.loads(inspect_raw(f"{host}/{repo}:{cosign.signature_tag(digest, None)}"))
    assert index["mediaType"] == cosign.OCI_INDEX
    (entry,) = index["manifests"]
    assert entry["artifactType"] == "application/spdx+json"
    artifact = json.loads(inspect_raw(f"{host}/{repo}@{entry['digest']}"))
    assert artifact["subject"]["digest"] == digest
    assert artifact["artifactType"] == "application/spdx+json"
    layer = cosign.RegistryReader(host).blob(repo, artifact["layers"][0]["digest"])
    assert json.loads(layer)["name"] == "app"
    mark = world.a.mark()
    noop = cli("diff")
    assert noop.code == 0, noop.stdout
    fallback = [r for r in world.a.requests(mark) if cosign.signature_tag(digest, None) in r.path]
    assert [r.method for r in fallback] == ["HEAD"], fallback  # a no-op: one HEAD, no GET

    # A changed file replaces its old artifact in the index; it does not pile up.
    (cli.specs / "sbom.spdx.json").write_text('{"spdxVersion": "SPDX-2.3", "name": "app2"}')
    assert cli("apply").code == 0
    index = json.loads(inspect_raw(f"{host}/{repo}:{cosign.signature_tag(digest, None)}"))
    assert len(index["manifests"]) == 1 and index["manifests"][0]["digest"] != entry["digest"]

    # A file outside the spec's directory is refused (a spec cannot push the daemon's secrets).
    secret = cli.root / "secret.txt"
    secret.write_text("do not push")
    cli.write_spec(
        "app.yaml",
        f"""
        base: {host}/base/single:1
        annotations: {{attached: "yes"}}
        attach:
          - file: ../secret.txt
            artifactType: text/plain
        targets: [{host}/{repo}:1]
        """,
    )
    outside = cli("apply")
    assert outside.code == 1 and "outside the spec's directory" in outside.stdout, outside.stdout


@pytest.mark.parametrize("kind", ["ed25519", "rsa-2048", "ecdsa-p384"])
def test_each_key_kind_signs_what_cosign_verifies(cli: Cli, world: World, kind: str) -> None:
    """cosign's schemes per key kind (Ed25519ph, RSA PKCS#1 v1.5, P-384 with SHA-384), as the
    witness checks them by default."""
    host = world.a.host
    key = cosign.generate_key(kind)  # type: ignore[arg-type]
    env = signing_env(cli, key, b"pass " + kind.encode())
    repo = f"signed/{kind}-{uuid.uuid4().hex[:8]}"
    cli.write_spec(
        "app.yaml",
        f"""
        base: {host}/base/single:1
        annotations: {{kind: {kind}}}
        targets: [{host}/{repo}:1]
        """,
    )
    result = cli("apply", env_extra=env)
    assert result.code == 0, result.stderr + result.stdout
    digest = sha256(inspect_raw(f"{host}/{repo}:1"))
    reasons = cosign.verify_in_registry(host, repo, digest, key.public_pem(), f"{host}/{repo}")
    assert cosign.verified(reasons), reasons


@pytest.mark.parametrize("case", ["no-annotation", "not-base64", "oversized"])
def test_a_malformed_signature_manifest_fails_its_spec_clearly(
    cli: Cli, world: World, case: str
) -> None:
    repo, digest = fresh_base(world, case)
    host = world.a.host
    key = cosign.generate_key()
    payload = cosign.simple_signing_payload(f"{host}/{repo}", digest)
    if case == "no-annotation":
        entry = cosign.SignatureEntry(payload, {})
    elif case == "not-base64":
        entry = cosign.SignatureEntry(payload, {cosign.SIGNATURE_ANNOTATION: "%%% not base64"})
    else:
        big = payload + b" " * (70 * 1024)
        entry = cosign.SignatureEntry.signed(big, cosign.sign(key.private, big))
    manifest, config, blobs = cosign.signature_manifest([entry])
    tag = cosign.signature_tag(digest)
    cosign.push_tagged(world.a, repo, tag, manifest, cosign.OCI_MANIFEST, [config, *blobs])
    policy = write_policy(cli, world, repo, key, case)
    guarded, _other = two_specs(cli, world, repo)
    result = cli("apply", "-o", "json", env_extra={"RECONCILER_TRUST_POLICY": str(policy)})
    assert result.code == 1
    report = result.json()
    assert states(report) == {"guarded": "Failed", "other": "Synced"}
    message = errors(report)["guarded"]
    assert tag in message, message
    assert {"no-annotation": "annotation", "not-base64": "base64", "oversized": "limit"}[
        case
    ] in message, message
    assert "Traceback" not in result.stderr
    assert not exists(guarded)


def test_a_bad_signing_key_file_fails_the_specs_it_would_sign_naming_the_file(
    cli: Cli, world: World
) -> None:
    host = world.a.host
    key_file = cli.root / "broken.key"
    key_file.write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n"
    )
    config = cli.root / "settings.yaml"
    config.write_text(f"signing:\n  key_file: {key_file}\n")
    cli.write_spec(
        "app.yaml",
        f"""
        base: {host}/base/single:1
        annotations: {{key: broken}}
        targets: [{host}/signed/{uuid.uuid4().hex[:8]}/broken:1]
        """,
    )
    result = cli("apply", env_extra={"RECONCILER_CONFIG": str(config)})
    assert result.code == 1
    out = result.stdout + result.stderr
    assert str(key_file) in out
    assert "c2VjcmV0LWJ5dGVz" not in out and "Traceback" not in out


def test_a_layer_whose_source_image_is_named_is_verified_with_that_image(
    cli: Cli, world: World
) -> None:
    repo, digest = fresh_base(world, "layer-source")
    host = world.a.host
    layer = json.loads(inspect_raw(f"{host}/{repo}:1"))["layers"][0]["digest"]
    key = cosign.generate_key()
    policy = write_policy(cli, world, repo, key, "layers")
    env = {"RECONCILER_TRUST_POLICY": str(policy)}
    out = f"{host}/layered/{uuid.uuid4().hex[:8]}"

    def spec(image: str, layer_ref: str) -> None:
        cli.write_spec(
            "layered.yaml",
            f"""
            base: {host}/base/multi:1
            layers:
              - ref: {layer_ref}
                image: {image}
            targets: [{out}:1]
            """,
        )

    spec(f"{host}/{repo}:1", f"{host}/{repo}@{layer}")
    unsigned = cli("apply", env_extra=env)
    assert unsigned.code == 1 and "no signature" in unsigned.stdout, unsigned.stdout
    assert "spec.layers[0].image" in unsigned.stdout
    assert not exists(f"{out}:1")

    cosign.sign_in_registry(world.a, repo, digest, key, f"{host}/{repo}")
    signed = cli("apply", env_extra=env)
    assert signed.code == 0, signed.stdout + signed.stderr
    assert exists(f"{out}:1")

    # A layer that the named image does not have (it lives in another repository).
    spec(f"{host}/{repo}@{digest}", f"{host}/tools/extra@{world.tools_layer.digest}")
    foreign = cli("apply", env_extra=env)
    assert foreign.code == 1 and "has no layer" in foreign.stdout, foreign.stdout


def test_a_broken_policy_file_fails_the_specs_naming_the_file_and_field(
    cli: Cli, world: World
) -> None:
    host = world.a.host
    policy = cli.root / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "sigstoreSigned", "keyPat": "x.pub"}]}))
    cli.write_spec(
        "app.yaml",
        f"""
        base: {host}/base/single:1
        annotations: {{policy: broken}}
        targets: [{host}/policy/{uuid.uuid4().hex[:8]}:1]
        """,
    )
    result = cli("apply", env_extra={"RECONCILER_TRUST_POLICY": str(policy)})
    assert result.code == 1
    assert str(policy) in result.stdout and "keyPat" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr


def test_a_signed_mirror_merges_the_base_signatures_with_its_own_once(
    cli: Cli, world: World
) -> None:
    """carry and signing write the same .sig tag: one manifest holds both, and stays put."""
    repo, digest = fresh_base(world, "carried-signed")
    a = world.a.host
    upstream, ours = cosign.generate_key(), cosign.generate_key()
    cosign.sign_in_registry(world.a, repo, digest, upstream, f"{a}/{repo}")
    cosign.push_attestation(world.a, repo, digest, upstream, predicate={"by": "upstream"})
    env = signing_env(cli, ours, b"mirror pass")
    target = f"mirror-signed/{uuid.uuid4().hex[:8]}"
    cli.write_spec(
        "mirror.yaml",
        f"""
        base: {a}/{repo}:1
        baseAnnotations: false
        carry: {{}}
        targets: [{a}/{target}:1]
        """,
    )
    for attempt in range(2):
        mark = world.a.mark()
        result = cli("apply", env_extra=env)
        assert result.code == 0, result.stderr + result.stdout
        writes = [r for r in world.a.requests(mark) if r.method in ("PUT", "POST", "PATCH")]
        assert bool(writes) == (attempt == 0), writes  # the second run writes nothing
        for key, identity in ((upstream, f"{a}/{repo}"), (ours, f"{a}/{target}")):
            reasons = cosign.verify_in_registry(a, target, digest, key.public_pem(), identity)
            assert cosign.verified(reasons), (attempt, reasons)
    # The base's attestations are carried whole; a mirror adds no provenance of its own (the
    # two would fight over the one .att tag at every run).
    att = cosign.signature_tag(digest, "att")
    assert inspect_raw(f"{a}/{target}:{att}") == inspect_raw(f"{a}/{repo}:{att}")


def test_two_specs_signing_one_digest_in_one_repository_both_keep_their_identity(
    cli: Cli, world: World
) -> None:
    host = world.a.host
    key = cosign.generate_key()
    env = signing_env(cli, key, b"shared")
    repo = f"shared-sig/{uuid.uuid4().hex[:8]}"
    for name in ("one", "two"):
        cli.write_spec(
            f"{name}.yaml",
            f"""
            base: {host}/base/single:1
            annotations: {{same: content}}
            targets: [{host}/{repo}:{name}]
            """,
        )
    assert cli("apply", env_extra=env).code == 0
    digest = sha256(inspect_raw(f"{host}/{repo}:one"))
    entries = cosign.existing_entries(world.a, repo, cosign.signature_tag(digest))
    identities = sorted(
        json.loads(e.payload)["critical"]["identity"]["docker-reference"] for e in entries
    )
    assert identities == [f"{host}/{repo}:one", f"{host}/{repo}:two"]
    mark = world.a.mark()
    assert cli("apply", env_extra=env).code == 0
    assert not [r for r in world.a.requests(mark) if r.method in ("PUT", "POST", "PATCH")]


def test_a_layer_by_digest_under_a_signed_scope_must_name_its_image(cli: Cli, world: World) -> None:
    repo, _digest = fresh_base(world, "bare-layer")
    host = world.a.host
    layer = json.loads(inspect_raw(f"{host}/{repo}:1"))["layers"][0]["digest"]
    policy = write_policy(cli, world, repo, cosign.generate_key(), "bare")
    cli.write_spec(
        "bare.yaml",
        f"""
        base: {host}/base/multi:1
        layers:
          - ref: {host}/{repo}@{layer}
        targets: [{host}/bare/{uuid.uuid4().hex[:8]}:1]
        """,
    )
    result = cli("apply", env_extra={"RECONCILER_TRUST_POLICY": str(policy)})
    assert result.code == 1
    assert "spec.layers[0]" in result.stdout and "layers[].image" in result.stdout, result.stdout


def test_a_spec_policy_adds_to_the_settings_policy_and_never_loosens_it(
    cli: Cli, world: World
) -> None:
    repo, _digest = fresh_base(world, "floor")
    policy = write_policy(cli, world, repo, cosign.generate_key(), "floor")
    host = world.a.host
    cli.write_spec(
        "loose.yaml",
        f"""
        base: {host}/{repo}:1
        annotations: {{loose: "yes"}}
        trust:
          default: [{{type: insecureAcceptAnything}}]
        targets: [{host}/loose/{uuid.uuid4().hex[:8]}:1]
        """,
    )
    result = cli("apply", env_extra={"RECONCILER_TRUST_POLICY": str(policy)})
    assert result.code == 1 and "no signature" in result.stdout, result.stdout
    # And a spec's own policy alone is enforced.
    strict = cli.root / "strict.pub"
    strict.write_bytes(cosign.generate_key().public_pem())
    cli.write_spec(
        "loose.yaml",
        f"""
        base: {host}/base/single:1
        annotations: {{strict: "yes"}}
        trust:
          default: [{{type: sigstoreSigned, keyPath: ../strict.pub}}]
        targets: [{host}/strict/{uuid.uuid4().hex[:8]}:1]
        """,
    )
    alone = cli("apply")
    assert alone.code == 1 and "spec.trust" in alone.stdout, alone.stdout


def test_a_mirror_reads_referrers_from_the_referrers_api_where_the_registry_answers_it(
    cli: Cli, world: World
) -> None:
    """distribution 2.8 has no referrers API; the fault proxy answers it the way a 1.1
    registry would (the index of the artifacts whose subject is the image), with no fallback
    tag in the repository: what a mirror carries then comes from the API."""
    repo, digest = fresh_base(world, "referrers-api")
    a, b = world.a.host, world.b.host
    _index, (artifact,) = cosign.push_referrers_fallback(
        world.a, repo, digest, [cosign.Artifact("application/spdx+json", b'{"api": 1}')]
    )
    fallback = cosign.signature_tag(digest, None)
    body = inspect_raw(f"{a}/{repo}:{fallback}")
    index_digest = sha256(body)
    request = urllib.request.Request(
        f"http://{a}/v2/{repo}/manifests/{index_digest}", method="DELETE"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - http, ours
        assert answer.status == 202
    assert not exists(f"{a}/{repo}:{fallback}")  # only the API lists the artifact now
    proxy = FaultProxy(a)
    try:
        proxy.add(
            Fault(
                "GET",
                rf"/v2/{repo}/referrers/{digest}$",
                "status",
                times=-1,
                status=200,
                headers={"Content-Type": cosign.OCI_INDEX},
                body=body,
            )
        )
        target = f"mirror-api/{uuid.uuid4().hex[:8]}"
        cli.write_spec(
            "mirror.yaml",
            f"""
            base: {proxy.host}/{repo}:1
            baseAnnotations: false
            carry: {{signatures: false}}
            targets: [{b}/{target}:1]
            """,
        )
        result = cli("apply")
        assert result.code == 0, result.stderr + result.stdout
        asked = [s for s in proxy.seen if "/referrers/" in s.path]
        assert [s.method for s in asked] == ["GET"], asked
        assert not [s for s in proxy.seen if fallback in s.path]  # the API answered
        carried = json.loads(inspect_raw(f"{b}/{target}:{fallback}"))
        assert [m["digest"] for m in carried["manifests"]] == [artifact]
        assert json.loads(inspect_raw(f"{b}/{target}@{artifact}"))["subject"]["digest"] == digest
    finally:
        proxy.stop()


def test_a_layer_by_digest_under_a_reject_scope_is_refused_naming_the_scope(
    cli: Cli, world: World
) -> None:
    repo, _digest = fresh_base(world, "rejected-layer")
    host = world.a.host
    layer = json.loads(inspect_raw(f"{host}/{repo}:1"))["layers"][0]["digest"]
    policy = cli.root / "reject-policy.json"
    document = {
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {f"{host}/{repo}": [{"type": "reject"}]}},
    }
    policy.write_text(json.dumps(document))
    cli.write_spec(
        "rejected.yaml",
        f"""
        base: {host}/base/multi:1
        layers:
          - ref: {host}/{repo}@{layer}
        targets: [{host}/rejected/{uuid.uuid4().hex[:8]}:1]
        """,
    )
    result = cli("apply", env_extra={"RECONCILER_TRUST_POLICY": str(policy)})
    assert result.code == 1
    assert (
        f"spec.layers[0]: layer {host}/{repo}@{layer} is rejected by the trust policy "
        f"(trust policy {policy}, scope {host}/{repo}: reject; no key or signature admits it)"
    ) in result.stdout, result.stdout
