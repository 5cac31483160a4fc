"""Values written as strings (digests, references, targets) as pydantic field types: parsed by
their own parser, serialized back with str(), shown to editors as strings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic_core import CoreSchema, core_schema

from reconciler.errors import ReferenceError_

T = TypeVar("T")


def string_value_schema(
    kind: type[T], parse: Callable[[Any], T], text: CoreSchema | None = None
) -> CoreSchema:
    """A schema that keeps a `kind` as it is and parses anything else with `parse`; a parse
    error becomes the field's validation error, with the parser's message."""

    def validate(value: Any) -> T:
        if isinstance(value, kind):
            return value
        try:
            return parse(value)
        except ReferenceError_ as exc:
            raise ValueError(str(exc)) from None

    return core_schema.no_info_plain_validator_function(
        validate,
        json_schema_input_schema=text or core_schema.str_schema(min_length=1),
        serialization=core_schema.to_string_ser_schema(),
    )
