"""Reference.parse against distribution/reference's ParseNormalizedNamed, case by case.

Each row is a fact about ParseNormalizedNamed (plus its tags and digests), written out here:
the input, and either what it normalises to, as (registry, repository, tag, digest), or
REJECTED. The rules come from distribution/reference's regexp.go, normalize.go and
reference.go (Parse), and the case classes from its reference_test.go, normalize_test.go and
regexp_test.go. Where this project must differ (it keeps every reference fully qualified),
the case is in test_deviations below, not in the table.
"""

from __future__ import annotations

import pytest

from reconciler.errors import ReferenceError_
from reconciler.oci.reference import Reference

Expected = tuple[str, str, str | None, str | None] | None
REJECTED: Expected = None

HEX = "0123456789abcdef" * 4  # 64 lowercase hex characters
D256 = "sha256:" + HEX
D512 = "sha512:" + HEX * 2
HUB = "docker.io"
LONG_NAMESPACE = "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255"


def ok(
    registry: str, repository: str, tag: str | None = None, digest: str | None = None
) -> Expected:
    return (registry, repository, tag, digest)


CASES: list[tuple[str, Expected]] = [
    # Docker Hub: a name without a registry is on docker.io; one component is under library/.
    ("debian", ok(HUB, "library/debian")),
    ("library/debian", ok(HUB, "library/debian")),
    ("docker/docker", ok(HUB, "docker/docker")),
    ("docker.io/debian", ok(HUB, "library/debian")),
    ("docker.io/library/debian", ok(HUB, "library/debian")),
    ("docker.io/docker/docker", ok(HUB, "docker/docker")),
    ("docker.io/library", ok(HUB, "library/library")),
    ("docker.io/library/foo/bar", ok(HUB, "library/foo/bar")),
    ("library/foo/bar", ok(HUB, "library/foo/bar")),
    ("store/foo/bar", ok(HUB, "store/foo/bar")),
    ("other/library", ok(HUB, "other/library")),
    ("ubuntu-12.04-base", ok(HUB, "library/ubuntu-12.04-base")),
    ("redis:latest", ok(HUB, "library/redis", "latest")),
    ("redis@" + D256, ok(HUB, "library/redis", None, D256)),
    ("busybox:latest@" + D256, ok(HUB, "library/busybox", "latest", D256)),
    # index.docker.io is the legacy name of docker.io, and only it (and only in lowercase).
    ("index.docker.io/debian", ok(HUB, "library/debian")),
    ("index.docker.io/library/debian", ok(HUB, "library/debian")),
    ("index.docker.io/docker/docker:1", ok(HUB, "docker/docker", "1")),
    ("registry-1.docker.io/foo", ok("registry-1.docker.io", "foo")),
    ("Docker.io/foo", ok("Docker.io", "foo")),
    # localhost is a registry only before a "/"; alone it is an official image's name.
    ("localhost/foo", ok("localhost", "foo")),
    ("localhost:5000/foo/bar:1", ok("localhost:5000", "foo/bar", "1")),
    ("localhost", ok(HUB, "library/localhost")),
    ("localhost:5000", ok(HUB, "library/localhost", "5000")),
    ("localhost:8080@" + D256, ok(HUB, "library/localhost", "8080", D256)),
    ("localhostx/foo", ok(HUB, "localhostx/foo")),
    ("LOCALHOST/foo", ok("LOCALHOST", "foo")),
    ("localhost:http/foo", REJECTED),
    # Hosts and ports: "." or ":" in the first component makes it a registry.
    ("test.com/foo", ok("test.com", "foo")),
    ("test:5000/repo", ok("test:5000", "repo")),
    ("test-com:8080/foo", ok("test-com:8080", "foo")),
    ("xn--n3h.com:18080/foo", ok("xn--n3h.com:18080", "foo")),
    (
        "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        ok("sub-dom1.foo.com", "bar/baz/quux", "some-long-tag"),
    ),
    (
        "b.gcr.io/test.example.com/my-app:test.example.com",
        ok("b.gcr.io", "test.example.com/my-app", "test.example.com"),
    ),
    ("0101.com/foo", ok("0101.com", "foo")),
    ("r.io:99999999/foo", ok("r.io:99999999", "foo")),  # a port is any run of digits
    ("test.com", ok(HUB, "library/test.com")),
    ("test.com:5000", ok(HUB, "library/test.com", "5000")),
    ("test.com:tag", ok(HUB, "library/test.com", "tag")),
    ("test_com/foo", ok(HUB, "test_com/foo")),
    ("test.com:http/foo", REJECTED),
    ("test.com:/foo", REJECTED),
    ("-docker.io/docker/docker", REJECTED),
    ("ab-.com/foo", REJECTED),
    ("ab.-com/foo", REJECTED),
    ("r.io./foo", REJECTED),
    ("foo_bar.com:8080/app", REJECTED),
    ("bad_hostname.com:8080/myapp:tag", REJECTED),
    ("https://github.com/docker/docker", REJECTED),
    # IPv4: a domain like any other when a "/" follows; alone, a name.
    ("192.168.1.1/repo", ok("192.168.1.1", "repo")),
    ("192.168.1.1:5000/repo:5050", ok("192.168.1.1:5000", "repo", "5050")),
    ("192.168.0.1:8/debian", ok("192.168.0.1:8", "debian")),
    ("127.0.0.1:5000/library/debian", ok("127.0.0.1:5000", "library/debian")),
    ("127.0.0.1:5000/debian", ok("127.0.0.1:5000", "debian")),  # library/ is docker.io's only
    ("192.168.1.1", ok(HUB, "library/192.168.1.1")),
    ("192.168.0.1:80", ok(HUB, "library/192.168.0.1", "80")),
    # IPv6: in brackets, hex digits and colons only, always followed by "/".
    ("[2001:db8::1]/repo", ok("[2001:db8::1]", "repo")),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", ok("[2001:db8:1:2:3:4:5:6]", "repo", "tag")),
    ("[2001:db8::1]:5000/repo:tag@" + D256, ok("[2001:db8::1]:5000", "repo", "tag", D256)),
    ("[2001:db8::]:5000/repo", ok("[2001:db8::]:5000", "repo")),
    ("[::1]:5000/repo", ok("[::1]:5000", "repo")),
    ("[FC00::1]:5000/docker/docker", ok("[FC00::1]:5000", "docker/docker")),
    (
        "[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:5000/r",
        ok("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:5000", "r"),
    ),
    ("[fd00123123123]:5000/repo", ok("[fd00123123123]:5000", "repo")),  # the regexp is all
    ("[2001:db8::1]", REJECTED),
    ("[2001:db8::1]:5000", REJECTED),
    ("[2001:db8::1]:tag", REJECTED),
    ("[fe80::1%eth0]:5000/repo", REJECTED),
    ("[fe80::1%@invalidzone]:5000/repo", REJECTED),
    ("[::ffff:192.168.1.1]/repo", REJECTED),
    ("[2001:db8:3:4::192.0.2.33]:5000/debian", REJECTED),
    ("fc00::1:5000/debian", REJECTED),
    ("[fd00:1:2::3]75050/repo", REJECTED),
    ("[fd00:1:2::3]::75050/repo", REJECTED),
    ("[]:5000/repo", REJECTED),
    ("[abc]/repo", REJECTED),  # no "." or ":": a path component, and an invalid one
    # Uppercase: it makes the first component a registry, and is never allowed in the path.
    ("Docker/docker", ok("Docker", "docker")),
    ("DOCKER/docker", ok("DOCKER", "docker")),
    ("Foo/bar:1", ok("Foo", "bar", "1")),
    ("Asdf.com/foo/bar", ok("Asdf.com", "foo/bar")),
    ("lowercase:Uppercase", ok(HUB, "library/lowercase", "Uppercase")),
    ("docker/Docker", REJECTED),
    ("docker.io/docker/Docker", REJECTED),
    ("Uppercase:tag", REJECTED),
    ("test:5000/Uppercase/lowercase:tag", REJECTED),
    ("Foo/FarB", REJECTED),
    ("FOO_BAR/x", REJECTED),
    # Separators: one ".", one "_", "__", or any run of "-", between alphanumerics.
    ("dock__er/docker", ok(HUB, "dock__er/docker")),
    ("docker-rules/docker", ok(HUB, "docker-rules/docker")),
    ("docker---rules/docker", ok(HUB, "docker---rules/docker")),
    ("d/docker", ok(HUB, "d/docker")),
    ("jess/t", ok(HUB, "jess/t")),
    (
        "example.com/some_separator__underscore/myimage",
        ok("example.com", "some_separator__underscore/myimage"),
    ),
    (
        "registry.io/foo/project--id.module--name.ver---sion--name",
        ok("registry.io", "foo/project--id.module--name.ver---sion--name"),
    ),
    ("dock___er/docker", REJECTED),
    ("____/____", REJECTED),
    ("_docker/_docker", REJECTED),
    ("docker_/docker_", REJECTED),
    ("-docker", REJECTED),
    ("-docker/docker", REJECTED),
    ("docker-/docker", REJECTED),
    ("-docker-/docker", REJECTED),
    ("foo/bar-", REJECTED),
    ("dock..er/docker", REJECTED),
    ("dock_.er/docker", REJECTED),
    ("dock-.er/docker", REJECTED),
    ("docker./docker", REJECTED),
    (".docker/docker", REJECTED),
    ("example.com/__underscore/myimage", REJECTED),
    ("example.com/..dots/myimage", REJECTED),
    ("example.com/.dots/myimage", REJECTED),
    ("example.com/nodouble..dots/myimage", REJECTED),
    ("r.io/../etc:1", REJECTED),
    ("aa/asdf$$^/aa", REJECTED),
    # Empty input and empty components.
    ("", REJECTED),
    (":justtag", REJECTED),
    ("@" + D256, REJECTED),
    ("docker/", REJECTED),
    ("docker.io/", REJECTED),
    ("/docker", REJECTED),
    ("docker///docker", REJECTED),
    ("docker.io/docker///docker", REJECTED),
    ("r.io//a", REJECTED),
    ("a:", REJECTED),
    ("a@", REJECTED),
    # Tags: a word character, then up to 127 of word characters, "." and "-".
    ("r.io/a:" + "t" * 128, ok("r.io", "a", "t" * 128)),
    ("r.io/a:" + "t" * 129, REJECTED),
    ("r.io/a:_tag", ok("r.io", "a", "_tag")),
    ("r.io/a:v1.0-RC_2", ok("r.io", "a", "v1.0-RC_2")),
    ("r.io/a:.tag", REJECTED),
    ("r.io/a:-tag", REJECTED),
    ("r.io/a:invalid~tag", REJECTED),
    ("r.io/a:b:c", REJECTED),
    ("r.io/a:x/y", REJECTED),
    # A bare digest has no "/", so it reads as an official image "sha256" with a hex tag.
    (D256, ok(HUB, "library/sha256", HEX)),
    # Digests: a registered algorithm and exactly its length in lowercase hex.
    ("r.io/a@" + D256, ok("r.io", "a", None, D256)),
    (
        "xn--7o8h.com/myimage:xn--7o8h.com@" + D512,
        ok("xn--7o8h.com", "myimage", "xn--7o8h.com", D512),
    ),
    ("repo@sha256:" + "f" * 34, REJECTED),
    ("r.io/a@sha256:" + HEX[:-1], REJECTED),
    ("r.io/a@sha256:" + HEX + "0", REJECTED),
    ("r.io/a@sha256:" + HEX.upper(), REJECTED),
    ("validname@invaliddigest:" + HEX, REJECTED),
    ("r.io/a@sha256:badbadbadbad", REJECTED),
    ("r.io/a@bad", REJECTED),
    ("r.io/a@2bad", REJECTED),
    ("r.io/a@" + D256 + "@" + D256, REJECTED),
    ("r.io/a@" + D256 + ":tag", REJECTED),
    # 64 hex characters are refused only as the whole input (an image ID).
    (HEX, REJECTED),
    ("docker.io/" + HEX, ok(HUB, "library/" + HEX)),
    ("library/" + HEX, ok(HUB, "library/" + HEX)),
    (HEX + ":tag", ok(HUB, "library/" + HEX, "tag")),
    (HEX[:-1], ok(HUB, "library/" + HEX[:-1])),
    (HEX + "a", ok(HUB, "library/" + HEX + "a")),
    (HEX.upper(), REJECTED),  # not an identifier, but uppercase
    (
        "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
        ok(HUB, "library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev"),
    ),
    # 255 characters bound the repository after normalisation, library/ in, registry out.
    ("example.com/" + "a" * 255 + ":tag", ok("example.com", "a" * 255, "tag")),
    ("example.com/" + "a" * 256 + ":tag", REJECTED),
    ("r" * 300 + ".io/a", ok("r" * 300 + ".io", "a")),
    ("a" * 247, ok(HUB, "library/" + "a" * 247)),
    ("a" * 248, REJECTED),
    ("docker.io/" + "a" * 248, REJECTED),
    ("index.docker.io/" + "a" * 247, ok(HUB, "library/" + "a" * 247)),
    ("a/" * 127 + "a:tag-puts-this-over-max", ok(HUB, "a/" * 127 + "a", "tag-puts-this-over-max")),
    ("a/" * 128 + "a:tag", REJECTED),
    ("_".join([LONG_NAMESPACE] * 4) + "/docker", REJECTED),
    # Whitespace is in no production.
    (" r.io/a:1", REJECTED),
    ("r.io/a b:1", REJECTED),
    ("r.io/a:1\n", REJECTED),
]


def _id(value: object) -> str:
    if isinstance(value, str):
        return value if len(value) <= 60 else f"{value[:24]}...{value[-12:]}({len(value)})"
    return "rejected" if value is None else "ok"


@pytest.mark.parametrize(("text", "expected"), CASES, ids=_id)
def test_parse_normalized_named(text: str, expected: Expected) -> None:
    if expected is REJECTED:
        with pytest.raises(ReferenceError_) as caught:
            Reference.parse(text)
        assert repr(text) in str(caught.value)  # the message quotes the input
        return
    ref = Reference.parse(text)
    digest = str(ref.digest) if ref.digest is not None else None
    assert (ref.registry, ref.repository, ref.tag, digest) == expected
    assert Reference.parse(str(ref)) == ref  # the fully qualified form reads back the same


def test_table_is_large_and_unique() -> None:
    inputs = [text for text, _ in CASES]
    assert len(inputs) == len(set(inputs))
    assert len(inputs) >= 60


@pytest.mark.parametrize(
    "text",
    [
        # distribution's Parse falls back to a name with no domain when the first component
        # has a "." but is no host: ParseNormalizedNamed returns "foo_bar.com/app" with an empty
        # Domain(). A Reference always has a registry, so these are errors here.
        "foo_bar.com/app",
        "a.b_c/d:1",
    ],
)
def test_deviations_host_like_path_is_rejected(text: str) -> None:
    with pytest.raises(ReferenceError_, match="invalid registry"):
        Reference.parse(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty image reference"),
        ("r.io/App:1", "must be lowercase"),
        ("r.io//a", "empty path component"),
        ("r.io/a:" + "t" * 129, "tag longer than 128"),
        (HEX, "image ID"),
        ("a" * 248, "longer than 255"),
        ("[::ffff:192.168.1.1]/repo", "invalid registry"),
        ("dock___er/docker", "invalid repository component"),
    ],
)
def test_messages_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ReferenceError_, match=problem):
        Reference.parse(text)
