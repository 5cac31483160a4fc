"""reconciler.trust: keys, payloads, signature manifests, the policy, and verify().

Keys are generated with `cryptography` here; openssl (a separate implementation) checks that
what `sign` writes verifies as cosign's schemes say and that what openssl signs verifies here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import nacl.secret
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa

from reconciler.errors import TrustError
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest
from reconciler.oci.document import parse_document
from reconciler.oci.location import parse_address
from reconciler.oci.models import Descriptor
from reconciler.trust.artifacts import (
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING_TYPE,
    Blob,
    SignatureEntry,
    artifact_manifest,
    has_signature,
    is_artifact_tag,
    parse_referrers_index,
    parse_signature_manifest,
    referrers_index,
    signature_manifest,
    tag_for,
)
from reconciler.trust.gpg import gpg_fingerprints
from reconciler.trust.keys import (
    PrivateKey,
    PublicKey,
    load_private_key,
    load_public_key,
    load_public_keys,
    private_key_of,
)
from reconciler.trust.policy import (
    InsecureAcceptAnything,
    Reject,
    SignedBy,
    SigstoreSigned,
    TrustPolicy,
    keys_of,
    load_policy_file,
    parse_policy,
    scopes_of,
)
from reconciler.trust.simplesigning import MAX_PAYLOAD, parse_payload, signing_payload
from reconciler.trust.verify import ImageIdentity, KnownKey, cache_key, signature_kind, verify
from tests.support import cosign
from tests.support.images import Image, make_layer, push_layout, write_layout
from tests.support.registry import Registry

DIGEST = Digest.of(b"the image manifest")
OTHER = Digest.of(b"another image manifest")

# --- keys -------------------------------------------------------------------------------


def pem_public(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pkcs8(key: object, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


GENERATORS: dict[str, Callable[[], object]] = {
    "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ecdsa-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ecdsa-p521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "rsa-2048": lambda: rsa.generate_private_key(65537, 2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_each_key_type_loads_signs_and_verifies(kind: str) -> None:
    raw = GENERATORS[kind]()
    private = load_private_key(pkcs8(raw), None, "cosign.key")
    public = load_public_key(pem_public(raw.public_key()), "cosign.pub")  # type: ignore[attr-defined]
    assert public.kind == kind
    assert private.public == public
    der = raw.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public.fingerprint == hashlib.sha256(der).hexdigest()
    payload = signing_payload("registry.example/team/app", DIGEST)
    signature = private.sign(payload)
    assert public.verify(payload, signature)
    assert not public.verify(payload + b" ", signature)
    # Its first byte changed: an RSA signature starts with 0x00 one time in about 256, so
    # setting it to 0x00 was no change then (the test failed once in CI that way).
    assert not public.verify(payload, bytes([signature[0] ^ 0xFF]) + signature[1:])
    assert not public.verify(payload, b"")
    assert not public.verify(payload, b"not a signature at all")
    assert load_public_key(public.pem(), "again") == public


def test_ecdsa_p384_also_verifies_sha256_as_containers_image_signs() -> None:
    raw = ec.generate_private_key(ec.SECP384R1())
    public = load_public_key(pem_public(raw.public_key()), "k.pub")
    payload = b"payload"
    assert public.verify(payload, raw.sign(payload, ec.ECDSA(hashes.SHA256())))
    assert public.verify(payload, raw.sign(payload, ec.ECDSA(hashes.SHA384())))
    assert not public.verify(payload, raw.sign(payload, ec.ECDSA(hashes.SHA512())))


def test_rsa_pss_verifies_and_sign_writes_pkcs1v15() -> None:
    raw = rsa.generate_private_key(65537, 2048)
    key = private_key_of(raw)
    payload = b"payload"
    pss = raw.sign(
        payload,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    assert key.public.verify(payload, pss)
    # What sign writes is PKCS#1 v1.5 over SHA-256: cryptography checks it with that scheme.
    raw.public_key().verify(key.sign(payload), payload, padding.PKCS1v15(), hashes.SHA256())


def test_ed25519ph_as_cosign_2_signs_verifies() -> None:
    import nacl.bindings

    raw = ed25519.Ed25519PrivateKey.generate()
    seed = raw.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    _, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
    state = nacl.bindings.crypto_sign_ed25519ph_state()
    nacl.bindings.crypto_sign_ed25519ph_update(state, b"payload")
    prehashed = nacl.bindings.crypto_sign_ed25519ph_final_create(state, secret)
    public = load_public_key(pem_public(raw.public_key()), "k.pub")
    assert public.verify(b"payload", prehashed)
    assert not public.verify(b"other", prehashed)
    assert public.verify(b"payload", raw.sign(b"payload"))


def openssl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=False)


@pytest.mark.parametrize(
    ("kind", "digest_flag"),
    [("ecdsa-p256", "-sha256"), ("ecdsa-p384", "-sha384"), ("rsa-2048", "-sha256")],
)
def test_openssl_agrees_on_signatures(tmp_path: Path, kind: str, digest_flag: str) -> None:
    raw = GENERATORS[kind]()
    key = private_key_of(raw)  # type: ignore[arg-type]
    (tmp_path / "key.pem").write_bytes(pkcs8(raw))
    (tmp_path / "pub.pem").write_bytes(key.public.pem())
    payload = signing_payload("registry.example/team/app", DIGEST)
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "ours.sig").write_bytes(key.sign(payload))
    checked = openssl(
        "dgst", digest_flag, "-verify", str(tmp_path / "pub.pem"),
        "-signature", str(tmp_path / "ours.sig"), str(tmp_path / "payload"),
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert b"Verified OK" in checked.stdout
    made = openssl(
        "dgst", digest_flag, "-sign", str(tmp_path / "key.pem"), str(tmp_path / "payload")
    )
    assert made.returncode == 0, made.stderr
    assert key.public.verify(payload, made.stdout)
    assert not key.public.verify(payload + b"x", made.stdout)


def test_public_keys_refused_with_where_and_no_key_bytes() -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    cases = {
        "DSA": pem_public(dsa.generate_private_key(2048).public_key()),
        "1024 bits": pem_public(rsa.generate_private_key(65537, 1024).public_key()),  # noqa: S505
        "secp256k1": pem_public(ec.generate_private_key(ec.SECP256K1()).public_key()),
        "not a PEM key": b"hello, I am not a key",
        "private key": pkcs8(ed),
        "damaged": b"-----BEGIN PUBLIC KEY-----\nAAAAAAAAAAAAAAAA\n-----END PUBLIC KEY-----\n",
        "CERTIFICATE": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "no END line": b"-----BEGIN PUBLIC KEY-----\nAAAA\n" * 3000,
        "ends with another label": b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END KEY-----\n",
    }
    for expected, data in cases.items():
        with pytest.raises(TrustError) as caught:
            load_public_key(data, "spec web: trust.keyData")
        message = str(caught.value)
        assert message.startswith("spec web: trust.keyData: "), message
        assert expected in message, message
        body = b"".join(data.splitlines()[1:-1])
        assert len(body) < 16 or body[:16].decode("ascii", "replace") not in message


def test_public_key_file_with_several_keys() -> None:
    a = pem_public(ec.generate_private_key(ec.SECP256R1()).public_key())
    b = pem_public(ed25519.Ed25519PrivateKey.generate().public_key())
    keys = load_public_keys(b"# team keys\n" + a + b"\n" + b + a, "keys.pem")
    assert [k.kind for k in keys] == ["ecdsa-p256", "ed25519"]
    with pytest.raises(TrustError, match=r"keys\.pem: 2 PEM blocks where one public key"):
        load_public_key(a + b, "keys.pem")
    with pytest.raises(TrustError, match=r"keys.pem \(key 2\): .*private key"):
        load_public_keys(a + pkcs8(ed25519.Ed25519PrivateKey.generate()), "keys.pem")


def cosign_envelope(der: bytes, passphrase: bytes, n: int, r: int, p: int) -> bytes:
    """A cosign encrypted key written field by field, as go-securesystemslib lays it out."""
    salt, nonce = os.urandom(32), os.urandom(24)
    secret = hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=1 << 26)
    sealed = nacl.secret.SecretBox(secret).encrypt(der, nonce).ciphertext
    envelope = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": n, "r": r, "p": p},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    body = base64.b64encode(json.dumps(envelope).encode())
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    label = b"ENCRYPTED SIGSTORE PRIVATE KEY"
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, lines, label)


def der_of(raw: object) -> bytes:
    return raw.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_cosign_encrypted_key_right_and_wrong_passphrase() -> None:
    raw = ec.generate_private_key(ec.SECP256R1())
    data = cosign_envelope(der_of(raw), b"correct horse", 32768, 8, 1)
    key = load_private_key(data, b"correct horse", "cosign.key")
    assert key.public == load_public_key(pem_public(raw.public_key()), "cosign.pub")
    for wrong in (b"Correct horse", b"", None):
        with pytest.raises(TrustError) as caught:
            load_private_key(data, wrong, "cosign.key")
        assert str(caught.value) == "cosign.key: wrong passphrase or damaged key"
    older = data.replace(b"SIGSTORE", b"COSIGN")
    assert load_private_key(older, b"correct horse", "old.key").public == key.public
    # An empty passphrase is a passphrase: the key reads back with none given.
    again = cosign_envelope(der_of(raw), b"", 1024, 8, 1)
    assert b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----" in again
    assert load_private_key(again, None, "k").public == key.public


def test_hostile_scrypt_parameters_refused_before_work() -> None:
    der = der_of(ed25519.Ed25519PrivateKey.generate())
    good = cosign_envelope(der, b"pw", 1024, 8, 1)
    body = json.loads(base64.b64decode(b"".join(good.splitlines()[1:-1])))
    hostile = [
        ({"N": 1 << 30, "r": 8, "p": 1}, "N=1073741824"),
        ({"N": 1 << 20, "r": 1 << 20, "p": 1}, "refused"),
        ({"N": 1 << 20, "r": 8, "p": 16}, "too high"),
        ({"N": 1000, "r": 8, "p": 1}, "not a power of two"),
        ({"N": "32768", "r": 8, "p": 1}, "positive integer"),
        ({"N": 32768, "r": 8}, "positive integer"),
    ]
    for params, expected in hostile:
        body["kdf"]["params"] = params
        encoded = base64.b64encode(json.dumps(body).encode())
        data = b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n%s\n" % encoded
        data += b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
        with pytest.raises(TrustError, match=expected) as caught:
            load_private_key(data, b"pw", "hostile.key")
        assert str(caught.value).startswith("hostile.key: ")
        assert "pw" not in str(caught.value).replace("power", "")


def test_encrypted_pkcs8_and_traditional_pem() -> None:
    raw = rsa.generate_private_key(65537, 2048)
    data = pkcs8(raw, b"s3cret-pass")
    key = load_private_key(data, b"s3cret-pass", "rsa.key")
    assert key.public.kind == "rsa-2048"
    with pytest.raises(TrustError) as caught:
        load_private_key(data, b"nope", "rsa.key")
    assert str(caught.value) == "rsa.key: wrong passphrase or damaged key"
    assert "s3cret" not in str(caught.value)
    with pytest.raises(TrustError, match=r"rsa\.key: the key is encrypted and no passphrase"):
        load_private_key(data, None, "rsa.key")
    traditional = raw.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert traditional.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert load_private_key(traditional, None, "rsa.key").public == key.public
    ec_raw = ec.generate_private_key(ec.SECP256R1())
    sec1 = ec_raw.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert load_private_key(sec1, None, "ec.key").public.kind == "ecdsa-p256"
    with pytest.raises(TrustError, match=r"ec\.key: expected one PEM private key, found 0"):
        load_private_key(pem_public(ec_raw.public_key()), None, "ec.key")
    with pytest.raises(TrustError, match=r"dsa\.key: unsupported key type DSA"):
        load_private_key(pkcs8(dsa.generate_private_key(2048)), None, "dsa.key")


def test_private_key_repr_holds_no_key_material() -> None:
    key = private_key_of(ec.generate_private_key(ec.SECP256R1()))
    assert repr(key) == f"PrivateKey(ecdsa-p256 key {key.public.fingerprint[:16]})"


# --- payloads ---------------------------------------------------------------------------


def test_payload_bytes_as_cosign_writes_them() -> None:
    raw = signing_payload("registry.example/team/app", DIGEST)
    assert raw == (
        b'{"critical":{"identity":{"docker-reference":"registry.example/team/app"},'
        b'"image":{"docker-manifest-digest":"' + str(DIGEST).encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )
    annotated = signing_payload("r.example/a", DIGEST, {"z": "1", "a": "<&>"})
    assert annotated.endswith(b'"optional":{"a":"\\u003c\\u0026\\u003e","z":"1"}}')


def test_payload_round_trip() -> None:
    for optional in (None, {"commit": "abc", "env": "prod"}):
        payload = parse_payload(signing_payload("r.example/a/b", DIGEST, optional), "p")
        assert payload.reference == "r.example/a/b"
        assert payload.digest == DIGEST
        assert payload.type == "cosign container image signature"
        assert payload.optional == optional


def test_payload_refusals() -> None:
    good = json.loads(signing_payload("r.example/a", DIGEST))

    def variant(change: Callable[[dict[str, object]], None]) -> bytes:
        document = json.loads(json.dumps(good))
        change(document)
        return json.dumps(document).encode()

    cases: list[tuple[bytes, str]] = [
        (b"{" + b" " * MAX_PAYLOAD + b"}", "over the 65536 limit"),
        (variant(lambda d: d["critical"].update(type="atomic container signature")), "type"),
        (variant(lambda d: d["critical"].update(type="Cosign Container Image Signature")), "type"),
        (variant(lambda d: d["critical"]["image"].pop("docker-manifest-digest")), "no 'docker-"),
        (
            variant(
                lambda d: d["critical"]["image"].update({"docker-manifest-digest": "sha256:x"})
            ),
            "docker-manifest-digest",
        ),
        (variant(lambda d: d.pop("optional")), "no 'optional'"),
        (variant(lambda d: d.update(extra=1)), "unknown field 'extra'"),
        (variant(lambda d: d.update(optional=[1])), "neither an object nor null"),
        (
            variant(lambda d: d["critical"]["identity"].update({"docker-reference": 5})),
            "not a string",
        ),
        (b'{"critical":{},"critical":{},"optional":null}', "appears twice"),
        (b"[1]", "not a JSON object"),
        (b"\xff", "not UTF-8"),
    ]
    for raw, expected in cases:
        with pytest.raises(TrustError, match=expected) as caught:
            parse_payload(raw, "layer 0 payload")
        assert str(caught.value).startswith("layer 0 payload: "), caught.value


# --- tags and signature manifests -------------------------------------------------------


def test_tags() -> None:
    assert tag_for(DIGEST, "sig") == f"sha256-{DIGEST.hex}.sig"
    assert tag_for(DIGEST, None) == f"sha256-{DIGEST.hex}"
    assert is_artifact_tag(tag_for(DIGEST, "att"))
    assert is_artifact_tag(tag_for(DIGEST, None))
    assert not is_artifact_tag("1.2.3")
    assert not is_artifact_tag(f"sha256-{DIGEST.hex[:-1]}.sig")
    assert not is_artifact_tag(f"sha256-{DIGEST.hex}.sig.extra.dots")


def signer() -> PrivateKey:
    return private_key_of(ec.generate_private_key(ec.SECP256R1()))


def test_signature_manifest_build_append_idempotent() -> None:
    payload = signing_payload("registry.example/team/app", DIGEST)
    alice, bob = signer(), signer()
    first = (payload, alice.sign(payload))
    built = signature_manifest(None, [first])
    document = parse_document(built.raw)
    assert document.media_type == mt.OCI_MANIFEST
    (layer,) = document.manifest.layers  # type: ignore[union-attr]
    assert layer.media_type == SIMPLESIGNING_TYPE
    assert layer.digest == Digest.of(payload)
    assert layer.annotations == {SIGNATURE_ANNOTATION: base64.b64encode(first[1]).decode()}
    config, payload_blob = built.blobs
    assert document.manifest.config.digest == config.digest  # type: ignore[union-attr]
    assert json.loads(config.data)["rootfs"]["diff_ids"] == [str(Digest.of(payload))]
    assert payload_blob.data == payload
    assert built.kept == ()

    second = (payload, bob.sign(payload))
    appended = signature_manifest(built.raw, [second, first])
    entries = parse_signature_manifest(appended.raw, "sig")
    assert [e.signature for e in entries] == [first[1], second[1]]
    assert [b.media_type for b in appended.blobs] == [mt.OCI_CONFIG, SIMPLESIGNING_TYPE]
    assert appended.kept == ()  # the only payload is pushed again (same digest)

    again = signature_manifest(appended.raw, [second, first, second])
    assert again.raw == appended.raw
    assert again.blobs == ()
    assert [d.media_type for d in again.kept] == [mt.OCI_CONFIG] + [SIMPLESIGNING_TYPE] * 2

    assert has_signature(entries, payload, alice.public)
    assert has_signature(entries, payload, bob.public)
    assert not has_signature(entries, payload, signer().public)
    assert not has_signature(entries, signing_payload("registry.example/x", DIGEST), alice.public)
    # ECDSA signs with a fresh nonce: a second signature by the same key is other bytes.
    assert alice.sign(payload) != first[1]
    other = signing_payload("registry.example/team/app", OTHER)
    third = signature_manifest(appended.raw, [(other, alice.sign(other))])
    assert [d.digest for d in third.kept] == [Digest.of(payload), Digest.of(payload)]
    assert len(parse_signature_manifest(third.raw, "sig")) == 3


def test_signature_manifest_keeps_foreign_layers_and_annotations() -> None:
    payload = signing_payload("r.example/a", DIGEST)
    theirs = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": {"mediaType": mt.DOCKER_CONFIG, "digest": str(OTHER), "size": 3},
        "layers": [
            {
                "mediaType": SIMPLESIGNING_TYPE,
                "digest": str(Digest.of(b"their payload")),
                "size": 13,
                "annotations": {
                    SIGNATURE_ANNOTATION: base64.b64encode(b"their sig").decode(),
                    "dev.sigstore.cosign/bundle": "{}",
                },
            }
        ],
    }
    raw = json.dumps(theirs).encode()
    result = signature_manifest(raw, [(payload, b"mine")])
    document = parse_document(result.raw)
    assert document.media_type == mt.DOCKER_MANIFEST
    assert document.manifest.config.media_type == mt.DOCKER_CONFIG  # type: ignore[union-attr]
    first, second = parse_signature_manifest(result.raw, "sig")
    assert first.signature == b"their sig"
    assert first.annotations["dev.sigstore.cosign/bundle"] == "{}"
    assert second.signature == b"mine"
    assert [d.digest for d in result.kept] == [Digest.of(b"their payload")]


def test_malformed_signature_manifests_refused() -> None:
    def manifest(*annotations: dict[str, str] | None, size: int = 10) -> bytes:
        layers = [
            {"mediaType": SIMPLESIGNING_TYPE, "digest": str(DIGEST), "size": size}
            | ({"annotations": a} if a is not None else {})
            for a in annotations
        ]
        config = {"mediaType": mt.OCI_CONFIG, "digest": str(OTHER), "size": 2}
        return json.dumps({"schemaVersion": 2, "config": config, "layers": layers}).encode()

    ok = {SIGNATURE_ANNOTATION: base64.b64encode(b"sig").decode()}
    cases = [
        (manifest(ok, None), "layer 1: no dev.cosignproject.cosign/signature"),
        (manifest(ok, {SIGNATURE_ANNOTATION: "***"}), "layer 1: .* not valid base64"),
        (manifest({SIGNATURE_ANNOTATION: ""}), "layer 0: .* is empty"),
        (manifest(ok, size=MAX_PAYLOAD + 1), "layer 0: payload of 65537 bytes"),
        (manifest(*[ok] * 1001), "1001 layers, over the 1000 limit"),
        (b'{"schemaVersion":2,"manifests":[]}', "an index where"),
        (b"not json", "not valid JSON"),
    ]
    for raw, expected in cases:
        with pytest.raises(TrustError, match=expected) as caught:
            parse_signature_manifest(raw, "r.example/a:sha256-x.sig")
        assert "r.example/a:sha256-x.sig" in str(caught.value)
    entries = parse_signature_manifest(manifest(ok), "sig")
    assert entries == (SignatureEntry(DIGEST, 10, b"sig", ok),)


def test_referrers_index_and_artifact_manifest() -> None:
    subject = Descriptor(media_type=mt.OCI_MANIFEST, digest=DIGEST, size=123)
    sbom = Blob.of(
        b'{"spdx": true}', "application/spdx+json", {"org.opencontainers.image.title": "sbom.json"}
    )
    raw, blobs = artifact_manifest(subject, "application/vnd.example.sbom", [sbom], {"a": "b"})
    document = parse_document(raw)
    manifest = document.manifest  # type: ignore[union-attr]
    assert manifest.artifact_type == "application/vnd.example.sbom"
    assert manifest.subject == subject
    assert manifest.config.media_type == "application/vnd.oci.empty.v1+json"
    assert manifest.config.digest == Digest.of(b"{}")
    assert manifest.config.size == 2
    assert manifest.layers[0].annotations == {"org.opencontainers.image.title": "sbom.json"}
    assert [b.data for b in blobs] == [b"{}", sbom.data]
    empty_raw, _ = artifact_manifest(subject, "application/vnd.example.note", [])
    assert parse_document(empty_raw).manifest.layers[0].digest == Digest.of(b"{}")  # type: ignore[union-attr]

    entry = document.descriptor(artifactType=manifest.artifact_type, annotations={"a": "b"})
    index = referrers_index(None, [entry])
    assert parse_referrers_index(index, "fallback") == (entry,)
    assert referrers_index(index, [entry]) == index
    other = Descriptor(media_type=mt.OCI_MANIFEST, digest=OTHER, size=9, artifactType="x/y")
    both = parse_referrers_index(referrers_index(index, [other, entry]), "fallback")
    assert [d.digest for d in both] == [entry.digest, OTHER]
    with pytest.raises(TrustError, match="fallback: not an OCI image index"):
        parse_referrers_index(signature_manifest(None, [(b"{}", b"s")]).raw, "fallback")


# --- policy -----------------------------------------------------------------------------

KEY_A = "a.pub"


def policy(**docker: list[dict[str, object]]) -> TrustPolicy:
    return parse_policy(
        {"default": [{"type": "reject"}], "transports": {"docker": dict(docker.items())}},
        "policy.json",
    )


def test_scope_precedence() -> None:
    sig = [{"type": "sigstoreSigned", "keyPath": KEY_A}]
    accept = [{"type": "insecureAcceptAnything"}]
    scopes = {
        "registry.example.com:5000/team/app:1.0": accept,
        "registry.example.com:5000/team/app": sig,
        "registry.example.com:5000/team": accept,
        "registry.example.com:5000": sig,
        "*.example.com": accept,
        "*.com": sig,
        "": accept,
    }
    order = list(scopes)
    for i, scope in enumerate(order):
        remaining = {s: scopes[s] for s in order[i:]}
        matched, requirements = parse_policy(
            {"default": [{"type": "reject"}], "transports": {"docker": remaining}}, "p.json"
        ).requirements_for("registry.example.com:5000", "team/app", "1.0")
        expected = 'transports.docker.""' if scope == "" else scope
        assert matched == expected
        assert requirements[0].type == scopes[scope][0]["type"]
    matched, requirements = policy().requirements_for("r.example", "a", None)
    assert (matched, requirements) == ("default", (Reject(),))
    by_digest = policy(**{f"r.example/a@{DIGEST}": [{"type": "insecureAcceptAnything"}]})
    assert by_digest.requirements_for("r.example", "a", None, DIGEST)[0] == f"r.example/a@{DIGEST}"
    assert by_digest.requirements_for("r.example", "a", "1", None)[0] == "default"
    assert TrustPolicy().requirements_for("r.example", "a", "1") == (
        "default",
        (InsecureAcceptAnything(),),
    )


def test_docker_io_normalisation() -> None:
    p = policy(**{"docker.io/library/busybox": [{"type": "insecureAcceptAnything"}]})
    for host, repository in [("docker.io", "busybox"), ("index.docker.io", "library/busybox")]:
        assert p.requirements_for(host, repository, "1")[0] == "docker.io/library/busybox"
    assert p.requirements_for("docker.io", "other/busybox", "1")[0] == "default"
    with pytest.raises(TrustError, match="docker scope 'busybox': not the fully expanded form"):
        policy(busybox=[{"type": "reject"}])


def test_policy_file_errors(tmp_path: Path) -> None:
    def load(text: str, name: str = "policy.json") -> TrustPolicy:
        path = tmp_path / name
        path.write_text(text)
        return load_policy_file(path)

    where = str(tmp_path / "policy.json")
    cases = [
        ("{", "not valid JSON"),
        ('{"transports": {}}', "default: required"),
        ('{"default": []}', "default: must list at least one requirement"),
        ('{"default": [{"type": "acceptAll"}]}', "default.0: unknown type 'acceptAll'"),
        ('{"default": [{"type": "reject", "x": 1}]}', "default.0.x: Extra inputs"),
        (
            '{"default": [{"type": "sigstoreSigned"}]}',
            "default.0: exactly one of keyPath, keyPaths and keyData",
        ),
        (
            '{"default": [{"type": "sigstoreSigned", "keyPath": "a", "keyData": "b"}]}',
            r"got keyPath, keyData",
        ),
        (
            '{"default": [{"type": "sigstoreSigned", "fulcio": {}, "keyPath": "a"}]}',
            "fulcio: keyless sigstore verification",
        ),
        (
            '{"default": [{"type": "sigstoreSigned", "keyPath": "a",'
            ' "signedIdentity": {"type": "exactReference", "dockerReference": "r.example/a"}}]}',
            "must carry a tag or a digest",
        ),
        (
            '{"default": [{"type": "reject"}], "transports": {"docker": {"r.example/a": []}}}',
            "transports.docker.r.example/a: must list at least one",
        ),
    ]
    for text, expected in cases:
        with pytest.raises(TrustError, match=expected) as caught:
            load(text)
        assert str(caught.value).startswith(where), caught.value
    with pytest.raises(TrustError, match=r"cannot read the trust policy: No such file"):
        load_policy_file(tmp_path / "missing.json")
    yaml_where = str(tmp_path / "policy.yaml")
    with pytest.raises(TrustError, match=rf"{yaml_where}:3: invalid YAML"):
        load("default:\n  - type: reject\n   bad: [\n", "policy.yaml")
    loaded = load(
        "default:\n  - type: reject\ntransports:\n  docker:\n    r.example/team:\n"
        "      - type: sigstoreSigned\n        keyPath: team.pub\n",
        "policy.yaml",
    )
    assert isinstance(loaded.requirements_for("r.example", "team/a", "1")[1][0], SigstoreSigned)


def test_containers_policy_json_as_distributed_loads(tmp_path: Path) -> None:
    text = json.dumps(
        {
            "default": [{"type": "insecureAcceptAnything"}],
            "transports": {
                "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]},
                "atomic": {
                    "hostname:5000/myns/official": [
                        {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}
                    ]
                },
                "docker": {
                    "registry.access.redhat.com": [
                        {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/k.gpg"}
                    ]
                },
            },
        }
    )
    (tmp_path / "policy.json").write_text(text)
    loaded = load_policy_file(tmp_path / "policy.json")
    _, requirements = loaded.requirements_for("registry.access.redhat.com", "ubi9", "latest")
    assert isinstance(requirements[0], SignedBy)


def test_keys_of(tmp_path: Path) -> None:
    a, b = signer().public, signer().public
    (tmp_path / "a.pub").write_bytes(a.pem())
    (tmp_path / "b.pub").write_bytes(b.pem())
    by_path = SigstoreSigned(keyPath="a.pub")
    assert keys_of(by_path, tmp_path) == (a,)
    by_paths = SigstoreSigned(keyPaths=("a.pub", str(tmp_path / "b.pub"), "a.pub"))
    assert keys_of(by_paths, tmp_path) == (a, b)
    by_data = SigstoreSigned(keyData=base64.b64encode(b.pem()).decode())
    assert keys_of(by_data, tmp_path, "spec web: trust") == (b,)
    with pytest.raises(TrustError, match=r"missing.pub: cannot read the key: No such file"):
        keys_of(SigstoreSigned(keyPath="missing.pub"), tmp_path)
    with pytest.raises(TrustError, match="spec web: trust: keyData is not valid base64"):
        keys_of(SigstoreSigned(keyData="!!"), tmp_path, "spec web: trust")
    with pytest.raises(TrustError, match="spec web: trust: keyData: not a PEM key"):
        keys_of(SigstoreSigned(keyData="aGVsbG8="), tmp_path, "spec web: trust")


# --- verify -----------------------------------------------------------------------------

IMAGE = ImageIdentity("registry.example", "team/app", "1.0")


def signed(
    key: PrivateKey, reference: str = "registry.example/team/app:1.0", digest: Digest = DIGEST
) -> tuple[bytes, SignatureEntry]:
    payload = signing_payload(reference, digest)
    signature = key.sign(payload)
    (entry,) = parse_signature_manifest(signature_manifest(None, [(payload, signature)]).raw, "s")
    return payload, entry


def keys_for_all(*keys: PrivateKey) -> Callable[[SigstoreSigned], tuple[PublicKey, ...]]:
    return lambda _requirement: tuple(k.public for k in keys)


def sigstore(identity: dict[str, str] | None = None) -> SigstoreSigned:
    data: dict[str, object] = {"type": "sigstoreSigned", "keyPath": "k.pub"}
    if identity is not None:
        data["signedIdentity"] = identity
    return SigstoreSigned.model_validate(data)


def test_verify_accepts_right_key_and_refuses_others() -> None:
    alice, mallory = signer(), signer()
    requirement = (sigstore(),)
    ok = verify(requirement, "scope", IMAGE, DIGEST, [signed(alice)], keys_for_all(alice))
    assert ok.accepted
    assert alice.public.fingerprint[:16] in ok.reason
    wrong = verify(requirement, "scope", IMAGE, DIGEST, [signed(mallory)], keys_for_all(alice))
    assert wrong == type(wrong)(
        False,
        "signed by an unknown ECDSA P-256 key (no key of the policy verifies it) (signature 1);"
        f" policy scope scope wants ECDSA P-256 key {alice.public.fingerprint[:16]}"
        " (keyPath k.pub)",
    )
    # A key the policy names elsewhere is named as the signer, with its source and scope.
    neighbour = private_key_of(ed25519.Ed25519PrivateKey.generate())
    known = [KnownKey(neighbour.public, "keyPath tools.pub, scope r.example/tools")]
    theirs = verify(
        requirement, "s", IMAGE, DIGEST, [signed(neighbour)], keys_for_all(alice), lambda: known
    )
    assert theirs.reason.startswith(
        f"signed by Ed25519 key {neighbour.public.fingerprint[:16]}"
        " (keyPath tools.pub, scope r.example/tools) (signature 1); policy scope s wants"
    ), theirs.reason
    asked = []

    def counted() -> list[KnownKey]:
        asked.append(1)
        return known

    strangers = [signed(mallory), signed(mallory), signed(mallory)]
    verify(requirement, "s", IMAGE, DIGEST, strangers, keys_for_all(alice), counted)
    assert asked == [1]  # the policy's other keys are read once per verdict, not per signature
    nothing = verify(requirement, "r.example/team", IMAGE, DIGEST, [], keys_for_all(alice))
    assert nothing == type(nothing)(
        False,
        f"no signature for {DIGEST}; policy scope r.example/team wants ECDSA P-256 key"
        f" {alice.public.fingerprint[:16]} (keyPath k.pub)",
    )
    # One good signature among strangers' is enough.
    mixed = [signed(mallory), signed(alice)]
    assert verify(requirement, "s", IMAGE, DIGEST, mixed, keys_for_all(alice)).accepted


def test_verify_refuses_other_digest_identity_and_blob_mismatch() -> None:
    alice = signer()
    keys = keys_for_all(alice)
    other = verify((sigstore(),), "s", IMAGE, DIGEST, [signed(alice, digest=OTHER)], keys)
    assert not other.accepted
    by_alice = f"signed by ECDSA P-256 key {alice.public.fingerprint[:16]}, but "
    assert other.reason.startswith(f"{by_alice}for {OTHER}, not {DIGEST} (signature 1)")
    moved = signed(alice, reference="registry.example/other:1.0")
    identity = verify((sigstore(),), "s", IMAGE, DIGEST, [moved], keys)
    assert not identity.accepted
    assert identity.reason.startswith(
        f"{by_alice}identity registry.example/other:1.0 is not registry.example/team/app:1.0"
    )
    payload, entry = signed(alice)
    swapped = verify((sigstore(),), "s", IMAGE, DIGEST, [(payload + b" ", entry)], keys)
    assert not swapped.accepted
    assert "does not match its layer" in swapped.reason
    # The most telling failure is reported: a right-key signature for another digest.
    both = verify((sigstore(),), "s", IMAGE, DIGEST, [moved, signed(alice, digest=OTHER)], keys)
    assert both.reason.startswith(f"{by_alice}identity ")


@pytest.mark.parametrize(
    ("identity", "signed_as", "image", "accepted"),
    [
        (None, "registry.example/team/app:1.0", IMAGE, True),
        (None, "registry.example/team/app", IMAGE, False),  # cosign's repository-only claim
        (None, "registry.example/team/app:2.0", IMAGE, False),
        (
            None,
            "registry.example/team/app:2.0",
            ImageIdentity("registry.example", "team/app"),
            True,
        ),
        (None, "registry.example/other:1.0", ImageIdentity("registry.example", "team/app"), False),
        ({"type": "matchExact"}, "registry.example/team/app:1.0", IMAGE, True),
        ({"type": "matchExact"}, "registry.example/team/app", IMAGE, False),
        (
            {"type": "matchExact"},
            "registry.example/team/app:1.0",
            ImageIdentity("registry.example", "team/app"),
            False,
        ),
        ({"type": "matchRepository"}, "registry.example/team/app", IMAGE, True),
        ({"type": "matchRepository"}, "registry.example/team/app:9", IMAGE, True),
        ({"type": "matchRepository"}, "registry.example/team/app2", IMAGE, False),
        (
            {"type": "exactReference", "dockerReference": "vendor.example/p:1"},
            "vendor.example/p:1",
            IMAGE,
            True,
        ),
        (
            {"type": "exactReference", "dockerReference": "vendor.example/p:1"},
            "vendor.example/p:2",
            IMAGE,
            False,
        ),
        (
            {"type": "exactRepository", "dockerRepository": "vendor.example/p"},
            "vendor.example/p",
            IMAGE,
            True,
        ),
        (
            {"type": "exactRepository", "dockerRepository": "vendor.example/p"},
            "vendor.example/q",
            IMAGE,
            False,
        ),
        (
            {
                "type": "remapIdentity",
                "prefix": "registry.example/team",
                "signedPrefix": "vendor.example/x",
            },
            "vendor.example/x/app:1.0",
            IMAGE,
            True,
        ),
        (
            {
                "type": "remapIdentity",
                "prefix": "registry.example/team",
                "signedPrefix": "vendor.example/x",
            },
            "registry.example/team/app:1.0",
            IMAGE,
            False,
        ),
        (
            {
                "type": "remapIdentity",
                "prefix": "registry.example/te",
                "signedPrefix": "vendor.example/x",
            },
            "registry.example/team/app:1.0",
            IMAGE,
            True,
        ),
        (
            {"type": "matchRepository"},
            "docker.io/library/busybox",
            ImageIdentity("index.docker.io", "busybox", "1"),
            True,
        ),
        (
            {"type": "matchRepository"},
            "index.docker.io/library/busybox",
            ImageIdentity("docker.io", "busybox", "1"),
            True,
        ),
    ],
)
def test_signed_identity_rules(
    identity: dict[str, str] | None, signed_as: str, image: ImageIdentity, accepted: bool
) -> None:
    alice = signer()
    verdict = verify(
        (sigstore(identity),), "s", image, DIGEST, [signed(alice, signed_as)], keys_for_all(alice)
    )
    assert verdict.accepted is accepted, verdict.reason
    if not accepted:
        assert verdict.reason.startswith("signed by ECDSA P-256 key "), verdict.reason
        assert ", but identity " in verdict.reason, verdict.reason


def test_verify_requires_every_requirement_and_reject() -> None:
    alice, bob = signer(), signer()
    first = sigstore()
    second = SigstoreSigned(keyPath="bob.pub")
    keys = {first.key_path: (alice.public,), second.key_path: (bob.public,)}

    def keys_for(requirement: SigstoreSigned) -> tuple[PublicKey, ...]:
        return keys[requirement.key_path]

    both = (first, second)
    only_alice = verify(both, "s", IMAGE, DIGEST, [signed(alice)], keys_for)
    assert not only_alice.accepted
    assert bob.public.fingerprint[:16] in only_alice.reason
    signatures = [signed(alice), signed(bob)]
    assert verify(both, "s", IMAGE, DIGEST, signatures, keys_for).accepted
    rejected = verify((first, Reject()), "team", IMAGE, DIGEST, signatures, keys_for)
    assert rejected == type(rejected)(False, "rejected by policy scope team")
    gpg = SignedBy(keyType="GPGKeys", keyPath="k.gpg")
    assert not verify((gpg,), "s", IMAGE, DIGEST, signatures, keys_for).accepted
    anything = verify((InsecureAcceptAnything(),), "s", IMAGE, DIGEST, [], keys_for)
    assert anything.accepted


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_signature_kind_names_the_key_type_a_signature_was_made_with(kind: str) -> None:
    key = private_key_of(GENERATORS[kind]())  # type: ignore[arg-type]
    names = {
        "ecdsa-p256": "ECDSA P-256",
        "ecdsa-p384": "ECDSA P-384",
        "ecdsa-p521": "ECDSA P-521",
        "rsa-2048": "RSA-2048",
        "ed25519": "Ed25519",
    }
    for n in range(20):  # ECDSA's integers vary in length: every draw must be named alike
        assert signature_kind(key.sign(b"payload %d" % n)) == names[kind]
    assert key.public.described == f"{names[kind]} key {key.public.fingerprint[:16]}"


def test_signature_kind_refuses_what_no_key_type_makes() -> None:
    p256 = private_key_of(ec.generate_private_key(ec.SECP256R1())).sign(b"x")
    for junk in (
        b"",
        b"\x00" * 40,
        b"not a signature at all",
        p256 + b"\x00",
        p256[:-1],
        b"\x30" * 70,
    ):
        assert signature_kind(junk) is None, junk


def test_verify_takes_an_address() -> None:
    alice = signer()
    address = parse_address("registry.example/team/app:1.0", Path())
    verdict = verify((sigstore(),), "s", address, DIGEST, [signed(alice)], keys_for_all(alice))
    assert verdict.accepted


def test_cache_key_changes_with_digest_key_identity_and_image() -> None:
    alice, bob = signer(), signer()
    requirement = (sigstore(),)
    base = cache_key(DIGEST, requirement, image=IMAGE, keys_for=keys_for_all(alice))
    assert base.startswith(f"{DIGEST}/")
    assert base == cache_key(DIGEST, (sigstore(),), image=IMAGE, keys_for=keys_for_all(alice))
    variants = {
        cache_key(OTHER, requirement, image=IMAGE, keys_for=keys_for_all(alice)),
        cache_key(DIGEST, requirement, image=IMAGE, keys_for=keys_for_all(bob)),
        cache_key(
            DIGEST,
            (sigstore({"type": "matchRepository"}),),
            image=IMAGE,
            keys_for=keys_for_all(alice),
        ),
        cache_key(
            DIGEST,
            requirement,
            image=ImageIdentity("registry.example", "team/app", "2"),
            keys_for=keys_for_all(alice),
        ),
        cache_key(DIGEST, requirement, image=IMAGE),
    }
    assert base not in variants
    assert len(variants) == 5


# --- skopeo as the witness of scope precedence ------------------------------------------


def test_scope_precedence_agrees_with_skopeo(registry_a: Registry, tmp_path: Path) -> None:
    """For each scope an image is looked up under, a policy where that scope accepts and every
    less specific one rejects (and the reverse): skopeo (containers/image) and
    requirements_for must pick the same scope, so they accept and refuse the same copies."""
    layout = write_layout(
        tmp_path / "image", [Image("linux", "amd64", [make_layer({"f": b"trust"})])], index=False
    )
    host = registry_a.host
    push_layout(layout, f"{host}/trust/ns/app:1")
    scopes = scopes_of(host, "trust/ns/app", "1")
    assert scopes == [
        f"{host}/trust/ns/app:1",
        f"{host}/trust/ns/app",
        f"{host}/trust/ns",
        f"{host}/trust",
        host,
        "*.0.0.1",
        "*.0.1",
        "*.1",
    ]
    scopes.append("")
    accept = [{"type": "insecureAcceptAnything"}]
    reject = [{"type": "reject"}]
    for i, scope in enumerate(scopes):
        for mine, rest in ((accept, reject), (reject, accept)):
            docker = {scope: mine} | {s: rest for s in scopes[i + 1 :]}
            document = {"default": rest, "transports": {"docker": docker}}
            path = tmp_path / "policy.json"
            path.write_text(json.dumps(document))
            matched, requirements = load_policy_file(path).requirements_for(
                host, "trust/ns/app", "1"
            )
            assert matched == (scope or 'transports.docker.""')
            ours = isinstance(requirements[0], InsecureAcceptAnything)
            copied = subprocess.run(
                ["skopeo", "--policy", str(path), "copy", "--src-tls-verify=false",
                 f"docker://{host}/trust/ns/app:1", f"dir:{tmp_path / 'out'}"],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert (copied.returncode == 0) is ours, (scope, copied.stderr)
            if not ours:
                assert "rejected by policy" in copied.stderr, copied.stderr


# --- GPG keys, named by fingerprint in signedBy refusals ----------------------------------


def test_gpg_fingerprints_are_the_ones_gpg_lists(tmp_path: Path) -> None:
    """A signedBy key is named by the fingerprint gpg shows, armoured or binary."""
    key = cosign.make_gpg_key(tmp_path / "gnupg")
    try:
        armoured = cosign.export_gpg_public_key(key, tmp_path / "key.asc").read_bytes()
        binary = subprocess.run(
            ["gpg", "--batch", "--export", key.fingerprint],
            env=key.env(), capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip
    finally:
        subprocess.run(
            ["gpgconf", "--kill", "all"], env=key.env(), capture_output=True, check=False
        )
    assert gpg_fingerprints(armoured, "key.asc") == (key.fingerprint,)
    assert gpg_fingerprints(binary, "key.gpg") == (key.fingerprint,)
    assert gpg_fingerprints(binary + binary, "ring.gpg") == (key.fingerprint,)
    for junk, why in [
        (b"not a key", "bad packet header"),
        (binary[:20], "past the end"),
        (b"\xb4\x03abc", "no OpenPGP public key"),  # a user ID packet alone
        (armoured.replace(b"\n\n", b"\n\n!!", 1), "not valid base64"),
    ]:
        with pytest.raises(TrustError, match=why) as caught:
            gpg_fingerprints(junk, "k.gpg")
        assert str(caught.value).startswith("k.gpg: ")
