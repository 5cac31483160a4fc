"""Strict, safe YAML reading that remembers where every value came from.

PyYAML's SafeLoader composes the node graph; this module turns nodes into plain values itself
so that it can (1) refuse duplicate keys, (2) record the line of every field for error
messages, (3) bound the work an alias bomb can cause, and (4) keep timestamps as the strings
the user wrote. Only the core YAML tags are accepted; `!!python/...` and custom tags are errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from reconciler.errors import SpecError, SpecLocation

Path_ = tuple[str | int, ...]

# Each node visit counts, aliases included, so "billion laughs" stops after this many.
NODE_BUDGET = 100_000
DEPTH_LIMIT = 64

# LibYAML's parser when PyYAML was built with it (the wheels are): same events, nodes and marks,
# about ten times faster than the pure-Python one on a directory of 500 specs.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR = "tag:yaml.org,2002:str"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_SCALAR_TAGS = frozenset(
    {
        _STR,
        _TIMESTAMP,
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:null",
    }
)
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


@dataclass(frozen=True)
class YamlDocument:
    """One document of a file: its value, its first line, and the line of each field path."""

    file: str
    index: int
    line: int
    value: Any
    lines: dict[Path_, int]

    def line_of(self, path: Path_) -> int:
        """The line of the longest prefix of `path` that the document has."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return self.line


def format_path(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader) -> None:
        self.file = file
        self.loader = loader
        self.visits = 0
        self.lines: dict[Path_, int] = {}

    def error(self, node: yaml.Node, path: Path_, message: str) -> SpecError:
        return SpecError(
            SpecLocation(self.file, node.start_mark.line + 1, format_path(path) or None), message
        )

    def build(self, node: yaml.Node, path: Path_, depth: int = 0) -> Any:
        self.visits += 1
        if self.visits > NODE_BUDGET:
            raise self.error(
                node,
                path,
                f"document expands to more than {NODE_BUDGET} nodes (YAML alias bomb?); refused",
            )
        if depth > DEPTH_LIMIT:
            raise self.error(node, path, f"nesting deeper than {DEPTH_LIMIT} levels; refused")
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                raise self.error(node, path, f"YAML tag {node.tag!r} is not allowed")
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        raise self.error(key_node, path, "YAML merge keys (<<) are not supported")
                    raise self.error(key_node, path, "mapping keys must be plain strings")
                key = key_node.value
                child = (*path, key)
                if key in result:
                    raise self.error(
                        key_node,
                        child,
                        f"duplicate key {key!r} (first on line {self.lines[child]})",
                    )
                self.lines[child] = key_node.start_mark.line + 1
                result[key] = self.build(value_node, child, depth + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                raise self.error(node, path, f"YAML tag {node.tag!r} is not allowed")
            items = []
            for i, item in enumerate(node.value):
                child = (*path, i)
                self.lines.setdefault(child, item.start_mark.line + 1)
                items.append(self.build(item, child, depth + 1))
            return items
        if node.tag not in _SCALAR_TAGS:
            raise self.error(node, path, f"YAML tag {node.tag!r} is not allowed (safe YAML only)")
        if node.tag in (_STR, _TIMESTAMP):
            return node.value
        try:
            return self.loader.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            # ValueError: an integer past Python's 4300-digit conversion limit, for one.
            problem = "number too large" if "digits" in str(exc) else str(exc)
            raise self.error(node, path, f"invalid value: {problem}") from None


# Every collection a document opens starts at one of these characters of its own: '[' or '{'
# (flow), '-' (a block sequence's entry), '?' or ':' (a key; a block or implicit mapping).
_OPENERS = "[{-?:"


def _check_depth(file: str, text: str) -> None:
    """Refuse deep nesting from the event stream, before PyYAML's composer recurses into it."""
    if sum(text.count(opener) for opener in _OPENERS) <= DEPTH_LIMIT:
        return  # too few openers to nest that deep: no need to parse the stream twice
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > DEPTH_LIMIT:
                    mark = event.start_mark
                    raise SpecError(
                        SpecLocation(file, mark.line + 1 if mark is not None else None),
                        f"nesting deeper than {DEPTH_LIMIT} levels; refused",
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return  # reported, with its line, by the composing pass


def _control_character(file: str, text: str, exc: yaml.reader.ReaderError) -> SpecError:
    where = text.count("\n", 0, exc.position) + 1
    code = exc.character if isinstance(exc.character, int) else ord(exc.character)
    return SpecError(SpecLocation(file, where), f"invalid YAML: control character U+{code:04X}")


_KEY_LINE = re.compile(r"( *)([A-Za-z_][\w.-]*):(?:\s|$)")


def _dedented_key(text: str, line: int) -> tuple[int, str, int] | None:
    """Where a YAML error at `line` comes from, when a key above it was written with less
    indentation than its siblings (`layers:` at column 0 among `spec:`'s fields): the parser
    only trips at the next line of the block it ended, the mistake is the key. A key above
    is the cause if indenting it and the lines under it like the error's line makes the
    text parse. Returns (its line, the key, that indentation), or None."""
    lines = text.splitlines()
    if not 0 < line <= len(lines) or len(lines) > 2_000:
        return None
    here = _KEY_LINE.match(lines[line - 1])
    if here is None or not here.group(1):
        return None
    indent = len(here.group(1))
    tried = 0
    for number in range(line - 1, 0, -1):
        key = _KEY_LINE.match(lines[number - 1])
        if key is None or len(key.group(1)) >= indent:
            continue
        above = [t for t in lines[: number - 1] if t.strip() and not t.lstrip().startswith("#")]
        if not above or len(above[-1]) - len(above[-1].lstrip(" ")) <= len(key.group(1)):
            continue  # not less indented than the line before it: not where a block broke
        shift = " " * (indent - len(key.group(1)))
        moved = [shift + t if t.strip() else t for t in lines[number - 1 : line - 1]]
        try:
            for _ in yaml.compose_all(
                "\n".join([*lines[: number - 1], *moved, *lines[line - 1 :]])
            ):
                pass
        except yaml.YAMLError:
            tried += 1
            if tried == 5:
                return None
            continue
        return number, key.group(2), indent
    return None


def read_documents(file: str, text: str) -> Iterator[YamlDocument]:
    """Yield each non-empty document of a YAML stream. Raises SpecError on bad YAML."""
    _check_depth(file, text)
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # the reader refuses control characters up front
        raise _control_character(file, text, exc) from None
    index = 0
    try:
        while True:
            try:
                if not loader.check_node():
                    break
                node = loader.get_node()
            except yaml.reader.ReaderError as exc:  # LibYAML's reader refuses them here
                raise _control_character(file, text, exc) from None
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark or exc.context_mark
                line = mark.line + 1 if mark else None
                problem = f"invalid YAML: {exc.problem or exc}"
                cause = _dedented_key(text, line) if line else None
                if cause is not None and line is not None:
                    at, key, indent = cause
                    spaces = f"{indent} space{'s' if indent != 1 else ''}"
                    problem = (
                        f"invalid YAML: {key!r} is indented less than the fields before and "
                        f"after it ({spaces}); the parser stopped at line {line}: {exc.problem}"
                    )
                    line = at
                raise SpecError(SpecLocation(file, line), problem) from None
            except yaml.YAMLError as exc:
                raise SpecError(SpecLocation(file), f"invalid YAML: {exc}") from None
            if node is None:
                break
            index += 1
            if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
                continue
            builder = _Builder(file, loader)
            try:
                value = builder.build(node, ())
            except (yaml.YAMLError, ValueError, OverflowError) as exc:
                # ValueError: e.g. an integer past Python's 4300-digit conversion limit.
                raise SpecError(
                    SpecLocation(file, node.start_mark.line + 1), f"invalid YAML value: {exc}"
                ) from None
            yield YamlDocument(file, index, node.start_mark.line + 1, value, builder.lines)
    finally:
        loader.dispose()
