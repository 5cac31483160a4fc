"""docs/trust.md's refusal messages are what the CLI prints.

Every refusal the page shows is produced against the session's registry, in one `apply` of one
spec per refusal (each on a base of its own, under its own scope of one policy file). The
parts that vary from run to run (host, repositories, digest, key fingerprints, paths) are
replaced by the page's example values, and each line must then be the page's, character for
character. Signatures are made with tests/support/cosign.py (written from cosign's format,
not from reconciler), fingerprints computed here from the keys, and the GPG key and its
fingerprint come from gpg itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.conftest import Cli, World
from tests.support import cosign
from tests.support.images import inspect_raw, sha256, skopeo

DOC = Path(__file__).resolve().parents[1] / "docs" / "trust.md"
BLOCK = re.compile(r"<!-- refusal: ([a-z-]+) -->\n```text\n(.*?)\n```", re.DOTALL)

# The page's example values, in place of what varies.
HOST = "registry.example.com"
REPOSITORY = "team/base"
ROOT = "/etc/reconciler"
DIGEST = "sha256:" + "59b8d365b04e" + "d75ea258b592e24e9f974ff42d19e26f3eb7bc0875ae5d35d11d"
WANTED = "3f1c0e9a5b7d2468"  # the key the policy wants
NEIGHBOUR = "8d0b6a1e4c2f9735"  # a key the policy names for another scope
GPG = "4F0E1D2C3B4A59687766554433221100FFEEDDCC"
ELSEWHERE = "sha256:" + "1" * 64  # the digest a misdirected signature is for

CASES = (
    "unsigned",
    "stranger",
    "neighbour",
    "damaged",
    "other-digest",
    "other-identity",
    "reject",
    "gpg",
    "unreadable-key",
)


def fingerprint(key: cosign.KeyPair) -> str:
    """sha256 of the DER SubjectPublicKeyInfo, first 16 hex digits, as the page names keys."""
    der = key.public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def documented() -> dict[str, str]:
    text = DOC.read_text()
    blocks = BLOCK.findall(text)
    assert len(blocks) == text.count("<!-- refusal:"), "a refusal marker without its block"
    return dict(blocks)


def copy_base(world: World, case: str) -> tuple[str, str]:
    repo = f"docs/{case}-{uuid.uuid4().hex[:8]}/base"
    skopeo(
        "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests",
        f"docker://{world.a.host}/base/single:1", f"docker://{world.a.host}/{repo}:1",
    )  # fmt: skip
    return repo, sha256(inspect_raw(f"{world.a.host}/{repo}:1"))


def push_signature(world: World, repo: str, digest: str, payload: bytes, signature: bytes) -> None:
    manifest, config, blobs = cosign.signature_manifest(
        [cosign.SignatureEntry.signed(payload, signature)]
    )
    tag = cosign.signature_tag(digest)
    cosign.push_tagged(world.a, repo, tag, manifest, cosign.OCI_MANIFEST, [config, *blobs])


def test_every_refusal_in_docs_trust_md_is_what_apply_prints(cli: Cli, world: World) -> None:
    host = world.a.host
    assert set(documented()) == set(CASES)
    wanted, neighbour = cosign.generate_key(), cosign.generate_key("ed25519")
    stranger = cosign.generate_key("rsa-2048")
    keys = cli.root / "keys"
    keys.mkdir()
    (keys / "base.pub").write_bytes(wanted.public_pem())
    gpg = cosign.make_gpg_key(cli.root / "gnupg")
    try:
        cosign.export_gpg_public_key(gpg, keys / "base.gpg")
    finally:
        subprocess.run(
            ["gpgconf", "--kill", "all"], env=gpg.env(), capture_output=True, check=False
        )

    repos: dict[str, str] = {}
    for case in CASES:
        repo, digest = copy_base(world, case)
        repos[case] = repo
        identity = f"{host}/{repo}"
        if case == "stranger":
            cosign.sign_in_registry(world.a, repo, digest, stranger, identity)
        elif case == "neighbour":
            cosign.sign_in_registry(world.a, repo, digest, neighbour, identity)
        elif case == "damaged":
            payload = cosign.simple_signing_payload(identity, digest)
            push_signature(world, repo, digest, payload, b"\0" * 40)
        elif case == "other-digest":
            payload = cosign.simple_signing_payload(identity, ELSEWHERE)
            push_signature(world, repo, digest, payload, cosign.sign(wanted.private, payload))
        elif case == "other-identity":
            cosign.sign_in_registry(world.a, repo, digest, wanted, f"{host}/someone/else")

    signed = {
        "type": "sigstoreSigned",
        "keyPath": "keys/base.pub",
        "signedIdentity": {"type": "matchRepository"},
    }
    docker: dict[str, list[dict[str, object]]] = {f"{host}/{r}": [signed] for r in repos.values()}
    docker[f"{host}/{repos['reject']}"] = [{"type": "reject"}]
    docker[f"{host}/{repos['gpg']}"] = [
        {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "keys/base.gpg"}
    ]
    docker[f"{host}/{repos['unreadable-key']}"] = [signed | {"keyPath": "keys/gone.pub"}]
    key_data = base64.b64encode(neighbour.public_pem()).decode()
    by_data = {k: v for k, v in signed.items() if k != "keyPath"} | {"keyData": key_data}
    docker[f"{host}/tools"] = [by_data]  # another scope: its key names a neighbour's signature
    policy = cli.root / "policy.json"
    document = {"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": docker}}
    policy.write_text(json.dumps(document))
    for case in CASES:
        cli.write_spec(
            f"{case}.yaml",
            f"""
            base: {host}/{repos[case]}:1
            annotations: {{case: {case}}}
            targets: [{host}/docs-out/{uuid.uuid4().hex[:8]}:1]
            """,
        )

    result = cli("apply", env_extra={"RECONCILER_TRUST_POLICY": str(policy)})
    assert result.code == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert key_data[:40] not in result.stdout + result.stderr  # keyData is named, never shown
    digest = sha256(inspect_raw(f"{host}/{repos['unsigned']}:1"))
    printed = {}
    for case in CASES:
        spec_file = f"{cli.specs}/{case}.yaml"
        (line,) = [
            line.removeprefix("  ! ")
            for line in result.stdout.splitlines()
            if line.startswith(f"  ! {spec_file}:")
        ]
        for actual, example in [
            (spec_file, "specs/web.yaml"),
            (str(cli.root), ROOT),
            (f"{host}/{repos[case]}", f"{HOST}/{REPOSITORY}"),
            (host, HOST),
            (digest, DIGEST),
            (digest[:19], DIGEST[:19]),  # sha256: and 12 digits, as an image is shown
            (fingerprint(wanted), WANTED),
            (fingerprint(neighbour), NEIGHBOUR),
            (gpg.fingerprint, GPG),
        ]:
            line = line.replace(actual, example)
        printed[case] = line
    for case, text in documented().items():
        assert printed[case] == text, f"docs/trust.md, refusal {case}:\n{printed[case]}"
