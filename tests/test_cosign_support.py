"""The cosign witness itself (tests/support/cosign.py): a witness that accepts anything proves
nothing, so each refusal is pinned, the formats are checked against published vectors, and the
registry round trip is read back with skopeo."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.support import cosign
from tests.support.images import (
    OCI_CONFIG,
    OCI_MANIFEST,
    Image,
    inspect_raw,
    make_layer,
    push_layout,
    sha256,
    skopeo,
    write_layout,
)
from tests.support.registry import Registry

OTHER_DIGEST = "sha256:" + "ab" * 32


@dataclass(frozen=True)
class Seeded:
    registry: Registry
    repo: str
    digest: str

    @property
    def identity(self) -> str:
        return f"{self.registry.host}/{self.repo}"


@pytest.fixture(scope="module")
def keys() -> dict[str, cosign.KeyPair]:
    return {kind: cosign.generate_key(kind) for kind in cosign.KEY_KINDS}


def seed(registry: Registry, root: Path, repo: str, marker: bytes) -> Seeded:
    """An image of its own in a repository of its own: signatures added here disturb no one."""
    layout = write_layout(
        root / repo.replace("/", "_"),
        [Image("linux", "amd64", [make_layer({"etc/marker": marker})])],
        index=False,
    )
    push_layout(layout, f"{registry.host}/{repo}:1")
    return Seeded(registry, repo, layout.digest)


@pytest.fixture
def image(registry_a: Registry, tmp_path: Path, request: pytest.FixtureRequest) -> Seeded:
    name = request.node.name.replace("[", "-").replace("]", "").replace("_", "-").lower()
    return seed(registry_a, tmp_path, f"cosign-witness/{name}", name.encode())


def signed_layout(
    path: Path, digest: str, entries: list[cosign.SignatureEntry], tampered: bytes | None = None
) -> Path:
    """A `.sig` manifest in an OCI layout; `tampered` replaces the first blob's bytes on disk."""
    manifest, config, blobs = cosign.signature_manifest(entries)
    cosign.write_tagged_layout(
        path, {cosign.signature_tag(digest): (manifest, OCI_MANIFEST)}, [config, *blobs]
    )
    if tampered is not None:
        (path / "blobs" / "sha256" / sha256(blobs[0]).split(":")[1]).write_bytes(tampered)
    return path


def entry(key: cosign.KeyPair, reference: str, digest: str) -> cosign.SignatureEntry:
    payload = cosign.simple_signing_payload(reference, digest)
    return cosign.SignatureEntry.signed(payload, cosign.sign(key.private, payload))


# --- signatures, offline ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", cosign.KEY_KINDS)
def test_each_key_type_round_trips_and_each_refusal_has_its_reason(
    kind: cosign.KeyKind, keys: dict[str, cosign.KeyPair], tmp_path: Path
) -> None:
    key, other = keys[kind], keys["ecdsa-p256" if kind != "ecdsa-p256" else "rsa-2048"]
    digest, identity = "sha256:" + "12" * 32, "registry.test:5000/team/app"
    good = entry(key, identity, digest)

    def check(
        name: str, entries: list[cosign.SignatureEntry], tampered: bytes | None = None
    ) -> list[str]:
        layout = signed_layout(tmp_path / name, digest, entries, tampered)
        return cosign.codes(cosign.verify_layout(layout, digest, key.public_pem(), identity))

    assert check("good", [good]) == [cosign.VALID]
    # The identity may carry a tag: only its repository part is compared.
    layout = tmp_path / "good"
    assert cosign.verified(cosign.verify_layout(layout, digest, key.public_pem(), identity + ":1"))

    wrong_key = cosign.codes(cosign.verify_layout(layout, digest, other.public_pem(), identity))
    flipped = bytearray(good.payload)
    flipped[-3] ^= 0x01
    # A changed byte under the old descriptor: the blob no longer matches its digest.
    stale = check("stale", [good], tampered=bytes(flipped))
    # A changed byte with a recomputed descriptor: only the signature can catch it.
    forged = check("forged", [cosign.SignatureEntry(bytes(flipped), good.annotations)])
    other_digest = check("other-digest", [entry(key, identity, OTHER_DIGEST)])
    other_repo = check("other-repo", [entry(key, "registry.test:5000/team/other", digest)])
    refusals = [wrong_key, stale, forged, other_digest, other_repo]
    assert refusals == [
        [cosign.BAD_SIGNATURE],
        [cosign.BLOB_MISMATCH],
        [cosign.BAD_SIGNATURE],
        [cosign.DIGEST_MISMATCH],
        [cosign.IDENTITY_MISMATCH],
    ]
    assert check("both", [entry(other, identity, digest), good]) == [
        cosign.BAD_SIGNATURE,
        cosign.VALID,
    ]


def test_the_other_refusals_have_reasons_too(keys: dict[str, cosign.KeyPair]) -> None:
    key = keys["ecdsa-p256"]
    digest, identity = "sha256:" + "34" * 32, "registry.test/app"

    def check(payload: bytes, annotations: dict[str, str] | None = None, **layer: object) -> str:
        if annotations is None:
            annotations = {
                cosign.SIGNATURE_ANNOTATION: base64.b64encode(
                    cosign.sign(key.private, payload)
                ).decode()
            }
        descriptor = {
            "mediaType": cosign.SIMPLE_SIGNING,
            "size": len(payload),
            "digest": sha256(payload),
            "annotations": annotations,
            **layer,
        }
        reason = cosign.check_layer(descriptor, payload, key.public, digest, identity)
        return reason.split(":", 1)[0]

    good = cosign.simple_signing_payload(identity, digest)
    assert check(good) == cosign.VALID
    assert check(good, {}) == cosign.NO_SIGNATURE
    assert check(good, {cosign.SIGNATURE_ANNOTATION: "not base64!"}) == cosign.BAD_SIGNATURE
    assert check(good, mediaType="application/octet-stream") == cosign.NOT_SIMPLE_SIGNING
    body = json.loads(good)
    body["critical"]["type"] = "atomic container signature"
    assert check(json.dumps(body).encode()) == cosign.WRONG_TYPE
    body = json.loads(good)
    body["critical"]["image"]["extra"] = "x"  # containers-signature(5): MUST reject unknowns
    assert check(json.dumps(body).encode()) == cosign.BAD_PAYLOAD
    assert check(b"not json") == cosign.BAD_PAYLOAD


def test_ed25519_and_p384_follow_what_cosign_signs_with(keys: dict[str, cosign.KeyPair]) -> None:
    payload = cosign.simple_signing_payload("r.test/app", "sha256:" + "56" * 32)
    ed = keys["ed25519"]
    ph, pure = (
        cosign.sign(ed.private, payload),
        cosign.sign(ed.private, payload, ed25519_mode="pure"),
    )
    assert ph != pure
    assert cosign.verify_signature(ed.public, payload, ph)
    assert not cosign.verify_signature(ed.public, payload, pure)
    assert cosign.verify_signature(ed.public, payload, pure, ed25519_mode="pure")
    assert not cosign.verify_signature(ed.public, payload, ph, ed25519_mode="pure")

    p384 = keys["ecdsa-p384"]
    assert isinstance(p384.private, ec.EllipticCurvePrivateKey)
    legacy = p384.private.sign(payload, ec.ECDSA(hashes.SHA256()))
    assert cosign.verify_signature(p384.public, payload, cosign.sign(p384.private, payload))
    assert not cosign.verify_signature(p384.public, payload, legacy)
    assert cosign.verify_signature(p384.public, payload, legacy, ecdsa_hash="sha256")


def test_ed25519ph_matches_the_rfc_8032_vector() -> None:
    # RFC 8032 section 7.3, "TEST abc" (Ed25519ph, empty context).
    secret = bytes.fromhex("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(secret)
    assert key.public_key().public_bytes_raw().hex() == (
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf"
    )
    assert cosign.sign(key, b"abc").hex() == (
        "98a70222f0b8121aa9d30f813d683f809e462b469c7ff87639499bb94e6dae41"
        "31f85042463c2a355a2003d062adf5aaa10b8c61e636062aaad11c2a26083406"
    )


# --- the encrypted private key ---------------------------------------------------------------


def test_reader_opens_the_published_encrypted_vector() -> None:
    # go-securesystemslib's `encrypted` package test vector (scrypt N=32768 r=8 p=1, secretbox),
    # the envelope cosign wraps in its PEM.
    envelope = (
        b'{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},'
        b'"salt":"N9a7x5JFGbrtB2uBR81jPwp0eiLR4A7FV3mjVAQrg1g="},'
        b'"cipher":{"name":"nacl/secretbox","nonce":"2h8HxMmgRfuYdpswZBQaU3xJ1nkA/5Ik"},'
        b'"ciphertext":"SEW6sUh0jf2wfdjJGPNS9+bkk2uB+Cxamf32zR8XkQ=="}'
    )
    assert cosign.decrypt_private_key(envelope, b"supersecret") == b"reallyimportant"
    with pytest.raises(cosign.KeyDecryptError, match="wrong passphrase"):
        cosign.decrypt_private_key(envelope, b"Supersecret")


@pytest.mark.parametrize("kind", cosign.KEY_KINDS)
def test_encrypted_key_round_trip(
    kind: cosign.KeyKind, keys: dict[str, cosign.KeyPair], tmp_path: Path
) -> None:
    key = keys[kind]
    key_path, pub_path = key.write(tmp_path, "cosign", b"correct horse")
    pem = key_path.read_bytes()
    lines = pem.decode().splitlines()
    assert lines[0] == "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"
    assert lines[-1] == "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----"
    assert all(len(line) <= 64 for line in lines[1:-1])
    assert key_path.stat().st_mode & 0o077 == 0
    envelope = json.loads(base64.b64decode("".join(lines[1:-1])))
    assert list(envelope) == ["kdf", "cipher", "ciphertext"]
    assert envelope["kdf"]["name"] == "scrypt"
    assert envelope["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(envelope["kdf"]["salt"])) == 32
    assert envelope["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(envelope["cipher"]["nonce"])) == 24
    assert b"correct horse" not in pem

    opened = cosign.read_encrypted_private_key(pem, b"correct horse")
    assert cosign.public_pem(opened.public_key()) == pub_path.read_bytes() == key.public_pem()
    with pytest.raises(cosign.KeyDecryptError, match="wrong passphrase"):
        cosign.read_encrypted_private_key(pem, b"correct horse ")
    # The older PEM type reads the same; another type does not.
    older = key.encrypted_pem(b"pw", cosign.COSIGN_PEM)
    assert older.startswith(b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    assert cosign.public_pem(cosign.read_encrypted_private_key(older, b"pw").public_key()) == (
        key.public_pem()
    )
    with pytest.raises(cosign.KeyDecryptError, match="unsupported PEM type"):
        cosign.read_encrypted_private_key(key.private_pem(), b"pw")


def test_an_altered_ciphertext_is_refused(keys: dict[str, cosign.KeyPair]) -> None:
    envelope = json.loads(cosign.encrypt_private_key(keys["ecdsa-p256"].private_der(), b"pw"))
    sealed = bytearray(base64.b64decode(envelope["ciphertext"]))
    sealed[20] ^= 0x80
    envelope["ciphertext"] = base64.b64encode(sealed).decode()
    with pytest.raises(cosign.KeyDecryptError):
        cosign.decrypt_private_key(json.dumps(envelope).encode(), b"pw")


# --- the payload against the published documents ------------------------------------------


def field_paths(value: object, prefix: str = "") -> set[str]:
    if not isinstance(value, dict):
        return set()
    paths = set()
    for name, child in value.items():
        path = f"{prefix}{name}"
        paths |= {path} | field_paths(child, path + ".")
    return paths


def test_payload_layout_matches_the_published_examples() -> None:
    digest = "sha256:" + "78" * 32
    payload = cosign.simple_signing_payload("ghcr.test/team/app", digest)
    # The example of cosign's SIGNATURE_SPEC.md ("Simple Signing"), field names only; it spells
    # "Docker-manifest-digest", which Go's case-insensitive decoder reads as the lowercase name
    # that containers-signature(5), the format it defers to, defines (and cosign writes).
    spec_example: dict[str, Any] = {
        "critical": {
            "identity": {"docker-reference": "testing/manifest"},
            "image": {"Docker-manifest-digest": "sha256:20be...fe55"},
            "type": "cosign container image signature",
        },
        "optional": {"creator": "atomic", "timestamp": 1458239713},
    }
    containers_signature = {
        "critical": {
            "type": "atomic container signature",
            "image": {"docker-manifest-digest": "sha256:817a..."},
            "identity": {"docker-reference": "docker.io/library/busybox:latest"},
        },
        "optional": {"creator": "some software package v1.0.1-35", "timestamp": 1483228800},
    }
    ours = json.loads(payload)
    assert field_paths(ours) == field_paths(containers_signature) - {
        "optional.creator",
        "optional.timestamp",
    }
    assert {p.lower() for p in field_paths(ours)} == {
        p.lower() for p in field_paths(spec_example) if not p.startswith("optional.")
    }
    assert ours["critical"]["type"] == spec_example["critical"]["type"]
    # Byte for byte what cosign prints for a signature without annotations.
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"ghcr.test/team/app"},'
        b'"image":{"docker-manifest-digest":"' + digest.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )
    annotated = json.loads(cosign.simple_signing_payload("r/a", digest, {"b": "2", "a": "1"}))
    assert list(annotated["optional"]) == ["a", "b"]
    assert cosign.signature_tag(digest) == "sha256-" + "78" * 32 + ".sig"
    assert cosign.signature_tag(digest, "att").endswith(".att")


def test_signature_manifest_layout() -> None:
    payloads = [b'{"one":1}', b'{"two":2}']
    entries = [cosign.SignatureEntry.signed(p, b"sig-" + p) for p in payloads]
    manifest_bytes, config_bytes, blobs = cosign.signature_manifest(entries)
    manifest, config = json.loads(manifest_bytes), json.loads(config_bytes)
    assert blobs == payloads
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"] == {
        "mediaType": OCI_CONFIG,
        "size": len(config_bytes),
        "digest": sha256(config_bytes),
    }
    assert [layer["mediaType"] for layer in manifest["layers"]] == [cosign.SIMPLE_SIGNING] * 2
    assert [layer["digest"] for layer in manifest["layers"]] == [sha256(p) for p in payloads]
    assert [
        base64.b64decode(layer["annotations"][cosign.SIGNATURE_ANNOTATION])
        for layer in manifest["layers"]
    ] == [b"sig-" + p for p in payloads]
    assert config["rootfs"] == {"type": "layers", "diff_ids": [sha256(p) for p in payloads]}
    assert list(config) == ["architecture", "created", "history", "os", "rootfs", "config"]


# --- against a real registry, read back with skopeo --------------------------------------------


def test_sign_in_registry_then_skopeo_and_the_verifier_agree(
    image: Seeded, keys: dict[str, cosign.KeyPair]
) -> None:
    key, other = keys["ecdsa-p256"], keys["ed25519"]
    host = image.registry.host
    assert cosign.codes(
        cosign.verify_in_registry(host, image.repo, image.digest, key.public_pem(), image.identity)
    ) == [cosign.NO_SIGNATURES]

    signed = cosign.sign_in_registry(image.registry, image.repo, image.digest, key)
    raw = inspect_raw(f"{host}/{image.repo}:{signed.tag}")
    assert sha256(raw) == signed.manifest_digest
    manifest = json.loads(raw)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    [layer] = manifest["layers"]
    assert layer["mediaType"] == cosign.SIMPLE_SIGNING
    assert base64.b64decode(layer["annotations"][cosign.SIGNATURE_ANNOTATION]) == signed.signature
    config = json.loads(
        skopeo(
            "inspect",
            "--raw",
            "--config",
            "--tls-verify=false",
            f"docker://{host}/{image.repo}:{signed.tag}",
        )
    )
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]
    payload = json.loads(signed.payload)
    assert payload["critical"]["identity"]["docker-reference"] == image.identity
    assert payload["critical"]["image"]["docker-manifest-digest"] == image.digest

    url = f"http://{host}"
    verify = cosign.verify_in_registry
    assert verify(url, image.repo, image.digest, key.public_pem(), image.identity) == [cosign.VALID]
    assert cosign.codes(
        verify(url, image.repo, image.digest, other.public_pem(), image.identity)
    ) == [cosign.BAD_SIGNATURE]
    assert cosign.codes(
        verify(url, image.repo, image.digest, key.public_pem(), f"{host}/cosign-witness/elsewhere")
    ) == [cosign.IDENTITY_MISMATCH]

    # A second key adds a second layer to the same `.sig` manifest, as `cosign sign` does.
    second = cosign.sign_in_registry(host, image.repo, image.digest, other)
    assert second.tag == signed.tag
    layers = json.loads(inspect_raw(f"{host}/{image.repo}:{signed.tag}"))["layers"]
    assert [entry["digest"] for entry in layers] == [layer["digest"], sha256(second.payload)]
    assert verify(url, image.repo, image.digest, key.public_pem(), image.identity) == [
        cosign.VALID,
        f"{cosign.BAD_SIGNATURE}: layer 1 ({layers[1]['digest']}): "
        "does not verify with the given key",
    ]
    assert cosign.codes(
        verify(url, image.repo, image.digest, other.public_pem(), image.identity)
    ) == [cosign.BAD_SIGNATURE, cosign.VALID]


def test_the_signature_of_another_image_does_not_verify_this_one(
    registry_a: Registry, tmp_path: Path, keys: dict[str, cosign.KeyPair]
) -> None:
    key = keys["rsa-2048"]
    one = seed(registry_a, tmp_path, "cosign-witness/copied-one", b"one")
    two = seed(registry_a, tmp_path, "cosign-witness/copied-two", b"two")
    cosign.sign_in_registry(registry_a, one.repo, one.digest, key)
    # The `.sig` manifest of one copied under two's signature tag: a replayed signature.
    tag_one, tag_two = cosign.signature_tag(one.digest), cosign.signature_tag(two.digest)
    skopeo(
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"docker://{one.identity}:{tag_one}",
        f"docker://{two.identity}:{tag_two}",
    )
    reasons = cosign.verify_in_registry(
        registry_a.host, two.repo, two.digest, key.public_pem(), one.identity
    )
    assert cosign.codes(reasons) == [cosign.DIGEST_MISMATCH]
    assert not cosign.verified(reasons)


def test_verify_layout_reads_what_skopeo_saves(
    image: Seeded, keys: dict[str, cosign.KeyPair], tmp_path: Path
) -> None:
    key = keys["ecdsa-p384"]
    signed = cosign.sign_in_registry(image.registry, image.repo, image.digest, key)
    saved = tmp_path / "saved"
    for tag in ("1", signed.tag):
        skopeo(
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            f"docker://{image.identity}:{tag}",
            f"oci:{saved}:{tag}",
        )
    names = [
        m["annotations"][cosign.REF_NAME]
        for m in json.loads((saved / "index.json").read_text())["manifests"]
    ]
    assert sorted(names) == sorted(["1", signed.tag])
    verify = cosign.verify_layout
    assert verify(saved, image.digest, key.public_pem(), image.identity) == [cosign.VALID]
    assert cosign.codes(
        verify(saved, image.digest, keys["ecdsa-p256"].public_pem(), image.identity)
    ) == [cosign.BAD_SIGNATURE]
    assert cosign.codes(verify(saved, OTHER_DIGEST, key.public_pem(), image.identity)) == [
        cosign.NO_SIGNATURES
    ]
    (saved / "blobs" / "sha256" / sha256(signed.payload).split(":")[1]).unlink()
    assert cosign.codes(verify(saved, image.digest, key.public_pem(), image.identity)) == [
        cosign.BLOB_MISSING
    ]


def test_attestation_sbom_and_referrers_fallback(
    image: Seeded, keys: dict[str, cosign.KeyPair]
) -> None:
    key = keys["ecdsa-p256"]
    host, repo, digest = image.registry.host, image.repo, image.digest
    cosign.sign_in_registry(host, repo, digest, key)

    att = cosign.push_attestation(host, repo, digest, key, predicate={"builder": "tests"})
    raw = inspect_raw(f"{host}/{repo}:{cosign.signature_tag(digest, 'att')}")
    assert sha256(raw) == att
    [layer] = json.loads(raw)["layers"]
    assert layer["mediaType"] == cosign.DSSE_ENVELOPE
    assert (
        layer["annotations"][cosign.PREDICATE_TYPE_ANNOTATION] == "https://slsa.dev/provenance/v1"
    )

    sbom = cosign.push_sbom(host, repo, digest, b'{"spdxVersion":"SPDX-2.3"}')
    raw = inspect_raw(f"{host}/{repo}:{cosign.signature_tag(digest, 'sbom')}")
    assert sha256(raw) == sbom
    assert [layer["mediaType"] for layer in json.loads(raw)["layers"]] == [cosign.SPDX_JSON]

    artifacts = [
        cosign.Artifact("application/spdx+json", b'{"spdx":true}', "application/spdx+json"),
        cosign.Artifact(
            "application/vnd.example.scan+json",
            b'{"ok":true}',
            annotations={"org.example.tool": "scanner"},
        ),
    ]
    index_digest, children = cosign.push_referrers_fallback(host, repo, digest, artifacts)
    raw = inspect_raw(f"{host}/{repo}:{cosign.signature_tag(digest, '')}")
    assert sha256(raw) == index_digest
    index = json.loads(raw)
    assert [d["digest"] for d in index["manifests"]] == children
    assert [d["artifactType"] for d in index["manifests"]] == [a.artifact_type for a in artifacts]
    assert index["manifests"][1]["annotations"] == {"org.example.tool": "scanner"}
    for child, artifact in zip(children, artifacts, strict=True):
        manifest = json.loads(inspect_raw(f"{host}/{repo}@{child}"))
        assert manifest["artifactType"] == artifact.artifact_type
        assert manifest["subject"]["digest"] == digest
        assert manifest["config"]["mediaType"] == cosign.OCI_EMPTY

    # None of these disturbs the signature.
    assert cosign.verify_in_registry(host, repo, digest, key.public_pem(), image.identity) == [
        cosign.VALID
    ]


# --- GPG simple signing, for `signedBy` policies later -------------------------------------------


@pytest.fixture
def gpg_key(tmp_path: Path) -> Iterator[cosign.GpgKey]:
    home = tmp_path / "gnupg"
    key = cosign.make_gpg_key(home)
    yield key
    subprocess.run(["gpgconf", "--kill", "all"], env=key.env(), capture_output=True, check=False)


def test_gpg_standalone_sign_and_verify(
    gpg_key: cosign.GpgKey, image: Seeded, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(inspect_raw(f"{image.identity}:1"))
    reference = f"{image.identity}:1"
    signature = cosign.standalone_sign(gpg_key, manifest, reference, tmp_path / "signature")
    good = cosign.standalone_verify(gpg_key, manifest, reference, signature)
    assert good.returncode == 0, good.stderr
    assert image.digest in good.stdout
    elsewhere = cosign.standalone_verify(gpg_key, manifest, f"{image.identity}:2", signature)
    assert elsewhere.returncode != 0
    assert (
        cosign.export_gpg_public_key(gpg_key, tmp_path / "key.asc")
        .read_bytes()
        .startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    )
