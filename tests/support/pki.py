"""Test certificates: a CA, a server certificate for 127.0.0.1 signed by it, and a token key."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Pki:
    ca_file: Path  # PEM of the CA that signed the server certificate
    cert_file: Path  # server certificate for 127.0.0.1 and localhost
    key_file: Path
    token_cert_file: Path  # self-signed certificate of the token signing key (rootcertbundle)
    token_cert_der: bytes
    token_key_pem: bytes


def make_pki(root: Path) -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)

    ca_key = _key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("reconciler test CA"))
        .issuer_name(_name("reconciler test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = _key()
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    token_key = _key()
    token_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("reconciler test token issuer"))
        .issuer_name(_name("reconciler test token issuer"))
        .public_key(token_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(token_key, hashes.SHA256())
    )
    pki = Pki(
        ca_file=root / "ca.pem",
        cert_file=root / "server.pem",
        key_file=root / "server.key",
        token_cert_file=root / "token.pem",
        token_cert_der=token_cert.public_bytes(serialization.Encoding.DER),
        token_key_pem=_pem_key(token_key),
    )
    pki.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(_pem_key(server_key))
    pki.token_cert_file.write_bytes(token_cert.public_bytes(serialization.Encoding.PEM))
    # skopeo's --cert-dir wants the CA as ca.crt in a directory of its own.
    (root / "certs").mkdir(exist_ok=True)
    (root / "certs" / "ca.crt").write_bytes(pki.ca_file.read_bytes())
    return pki
