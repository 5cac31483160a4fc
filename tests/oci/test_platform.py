from __future__ import annotations

import pytest

from reconciler.oci.platform import PlatformKey


@pytest.mark.parametrize(
    ("wanted", "image", "match"),
    [
        ("linux/amd64", "linux/amd64", True),
        ("linux/arm64", "linux/arm64/v8", True),  # no variant asked: any
        ("linux/arm64/v8", "linux/arm64", True),  # v8 is arm64's default
        ("linux/arm/v7", "linux/arm", True),
        ("linux/arm/v6", "linux/arm/v7", False),
        ("linux/amd64", "windows/amd64", False),
        ("linux/amd64", "linux/arm64", False),
    ],
)
def test_matches(wanted: str, image: str, match: bool) -> None:
    assert PlatformKey.parse(wanted).matches(PlatformKey.parse(image)) is match


@pytest.mark.parametrize(
    "text", ["linux", "linux/", "/amd64", "linux/amd64/v8/x", "Linux/AMD64", "linux/amd 64"]
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="platform"):
        PlatformKey.parse(text)


def test_equality_normalizes_default_variant() -> None:
    assert PlatformKey.parse("linux/arm64") == PlatformKey.parse("linux/arm64/v8")
    assert len({PlatformKey.parse("linux/arm64"), PlatformKey.parse("linux/arm64/v8")}) == 1
    assert str(PlatformKey.parse("linux/arm64/v8")) == "linux/arm64/v8"
