from __future__ import annotations

import pytest

from reconciler.errors import ReferenceError_
from reconciler.oci.reference import Reference, parse_repository

D = "sha256:" + "c" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("python", "docker.io", "library/python", None, None),
        ("python:3.12-slim", "docker.io", "library/python", "3.12-slim", None),
        ("docker.io/python:3", "docker.io", "library/python", "3", None),
        ("index.docker.io/library/python:3", "docker.io", "library/python", "3", None),
        ("bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
        ("localhost/app:1", "localhost", "app", "1", None),
        ("localhost:5000/team/app:1", "localhost:5000", "team/app", "1", None),
        ("127.0.0.1:5000/a/b/c:x", "127.0.0.1:5000", "a/b/c", "x", None),
        ("[::1]:5000/app:1", "[::1]:5000", "app", "1", None),
        ("ghcr.io/org/app@" + D, "ghcr.io", "org/app", None, D),
        ("ghcr.io/org/app:1@" + D, "ghcr.io", "org/app", "1", D),
        ("Registry.Example.com/a:b", "Registry.Example.com", "a", "b", None),
        ("r.io/a__b/c-d/e.f/g--h:Tag_1.0-x", "r.io", "a__b/c-d/e.f/g--h", "Tag_1.0-x", None),
        ("r.io/a:" + "t" * 128, "r.io", "a", "t" * 128, None),
    ],
)
def test_parse(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert (str(ref.digest) if ref.digest else None) == digest
    assert Reference.parse(str(ref)) == ref  # fully qualified form round-trips


@pytest.mark.parametrize(
    "text",
    [
        "",
        "r.io/App:1",  # uppercase repository
        "r.io/a:" + "t" * 129,  # tag over 128
        "r.io/a:-tag",  # tag must start with a word character
        "r.io/a@sha256:short",
        "r.io/a@sha256:../../etc",
        "r.io//a:1",
        "r.io/a/:1",
        "r.io/a_-b:1",
        " r.io/a:1",
        "r.io/a b:1",
        "-bad.io/a:1",
        "r.io/" + "a" * 256,
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ReferenceError_):
        Reference.parse(text)


def test_identifier_prefers_digest() -> None:
    assert Reference.parse("r.io/a:1@" + D).identifier == D
    assert Reference.parse("r.io/a:1").identifier == "1"
    with pytest.raises(ReferenceError_):
        _ = Reference.parse("r.io/a").identifier


@pytest.mark.parametrize(
    ("registry", "repository", "ok"),
    [
        ("mcr.microsoft.com", "dotnet/aspnet", True),
        ("localhost", "x", True),
        ("r:5000", "x", True),
        ("nodots", "x", False),
        ("r.io/x", "y", False),
        ("r.io", "Bad", False),
    ],
)
def test_parse_repository(registry: str, repository: str, ok: bool) -> None:
    if ok:
        ref = parse_repository(registry, repository)
        assert (ref.registry, ref.repository, ref.tag) == (registry, repository, None)
    else:
        with pytest.raises(ReferenceError_):
            parse_repository(registry, repository)
