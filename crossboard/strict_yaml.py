"""YAML reading without YAML 1.1 surprises, keeping the line of every value.

PyYAML's defaults turn `no`/`on` into booleans and `0755` into 493. Here only `true`/`false`
are booleans, only plain decimals are numbers, and everything else stays the string it looks
like, so a strict schema can reject it loudly instead of accepting a changed meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import UserError

KeyPath = tuple[str | int, ...]

_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")
_FLOAT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)\.[0-9]+$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")


class _StrictResolver(yaml.resolver.BaseResolver):
    """Tags plain scalars by YAML 1.2 core rules only."""


for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", _BOOL, "tTfF"),
    ("tag:yaml.org,2002:int", _INT, "-+0123456789"),
    ("tag:yaml.org,2002:float", _FLOAT, "-+0123456789"),
    ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""]),
):
    _StrictResolver.add_implicit_resolver(_tag, _pattern, list(_first))


MAX_DEPTH = 32  # a board file is a few levels deep; far deeper is a mistake or an attack


class _StrictLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer, _StrictResolver):
    def __init__(self, stream):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _StrictResolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent, index):
        # Aliases refused: a few hundred bytes of them expand to gigabytes ("billion laughs").
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in board files", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


@dataclass
class Located:
    """A YAML document as plain Python values, and the line each key path was written on."""

    value: object
    lines: dict[KeyPath, tuple[Path, int]] = field(default_factory=dict)

    def where(self, path: KeyPath) -> tuple[Path, int]:
        """The file and line of the deepest part of `path` that was written somewhere."""
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                return self.lines[path[:cut]]
        raise KeyError(path)


def load(path: Path, display: str) -> Located:
    try:
        text = path.read_text()
    except OSError as error:
        raise UserError(f"{display}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{display}: not UTF-8 text (byte {error.start}): save it as UTF-8") from None
    try:
        root = yaml.compose(text, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(f"{display}:{line}: not valid YAML: {problem}") from None
    located = Located(value={})
    if root is None:
        located.lines[()] = (Path(display), 1)
        return located
    located.value = _build(root, (), Path(display), located.lines)
    return located


def _build(node: yaml.Node, path: KeyPath, display: Path, lines: dict) -> object:
    lines[path] = (display, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, object] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                raise UserError(f"{display}:{key_node.start_mark.line + 1}: keys must be plain words")
            key = key_node.value
            if key in result:
                raise UserError(f"{display}:{key_node.start_mark.line + 1}: {dotted(path + (key,))}: given twice")
            result[key] = _build(value_node, path + (key,), display, lines)
            lines[path + (key,)] = (display, key_node.start_mark.line + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (index,), display, lines) for index, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.ScalarNode) -> object:
    if node.tag == "tag:yaml.org,2002:bool":
        return node.value.lower() == "true"
    if node.tag == "tag:yaml.org,2002:int":
        return int(node.value)
    if node.tag == "tag:yaml.org,2002:float":
        return float(node.value)
    if node.tag == "tag:yaml.org,2002:null":
        return None
    return node.value


def merge(base: Located, override: Located, replaced_whole: frozenset[KeyPath] = frozenset()) -> Located:
    """`override` laid over `base`: mappings merge key by key, except those at `replaced_whole`
    (one-of choices such as a kernel source); anything else is replaced."""
    lines = dict(base.lines)

    def walk(left: object, right: object, path: KeyPath) -> object:
        if isinstance(left, dict) and isinstance(right, dict) and path not in replaced_whole:
            merged = dict(left)
            for key, value in right.items():
                merged[key] = walk(left.get(key), value, path + (key,))
            return merged
        for key_path in [p for p in lines if p[: len(path)] == path and len(p) > len(path)]:
            del lines[key_path]
        lines.update({p: where for p, where in override.lines.items() if p[: len(path)] == path})
        return right

    value = walk(base.value, override.value, ())
    return Located(value=value, lines=lines)


def dotted(path: KeyPath) -> str:
    """`kernel.source`, `apps[0].path`: a key path as users write it in messages."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"
