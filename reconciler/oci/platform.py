"""Platforms (`os/arch[/variant]`) and how a requested platform matches an image's."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import core_schema

_COMPONENT = re.compile(r"[a-z0-9_.-]+")

# The variant an image gets when none is written (containerd's platforms.Normalize).
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


class Platform(BaseModel):
    """The `platform` object of an index entry, as written on the wire."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True, defer_build=True)

    architecture: str
    os: str
    os_version: str | None = Field(default=None, alias="os.version")
    os_features: tuple[str, ...] | None = Field(default=None, alias="os.features")
    variant: str | None = None
    features: tuple[str, ...] | None = None

    def key(self) -> PlatformKey:
        return PlatformKey(self.os, self.architecture, self.variant)

    def __str__(self) -> str:
        return str(self.key())


class PlatformKey:
    """`os/arch[/variant]` as users write it; compares with default variants normalized."""

    __slots__ = ("architecture", "os", "variant")

    def __init__(self, os: str, architecture: str, variant: str | None = None) -> None:
        self.os = os
        self.architecture = architecture
        self.variant = variant or None

    @classmethod
    def parse(cls, value: str) -> PlatformKey:
        if not isinstance(value, str):
            raise ValueError(f"platform must be a string like linux/amd64, not {value!r}")  # noqa: TRY004 - pydantic reports ValueError
        parts = value.split("/")
        if not 2 <= len(parts) <= 3 or not all(_COMPONENT.fullmatch(p) for p in parts):
            raise ValueError(f"invalid platform {value!r}: expected os/arch or os/arch/variant")
        return cls(*parts)

    def _normalized_variant(self) -> str | None:
        return self.variant or _DEFAULT_VARIANT.get(self.architecture)

    def matches(self, other: PlatformKey) -> bool:
        """Does this requested platform select `other`? No variant asked means any variant."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if self.variant is None:
            return True
        return self._normalized_variant() == other._normalized_variant()

    def _identity(self) -> tuple[str, str, str | None]:
        return (self.os, self.architecture, self._normalized_variant())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlatformKey) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base

    def __repr__(self) -> str:
        return f"PlatformKey({str(self)!r})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, _source: Any, _handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: Any) -> PlatformKey:
            return value if isinstance(value, PlatformKey) else cls.parse(value)

        return core_schema.no_info_plain_validator_function(
            validate,
            json_schema_input_schema=core_schema.str_schema(
                pattern=r"^[a-z0-9_.-]+/[a-z0-9_.-]+(/[a-z0-9_.-]+)?$"
            ),
            serialization=core_schema.to_string_ser_schema(),
        )


# Index entries that describe no runnable image (buildx attestations and the like) carry this.
UNKNOWN_PLATFORM = PlatformKey("unknown", "unknown")
