"""Changing a board file the way a person would: comments, order and YAML 1.2 meaning kept (`yes` stays
the word yes), so that what crossboard adds is all that changes."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from ruamel.yaml import YAML, CommentedMap
from ruamel.yaml.error import YAMLError

from ..errors import UserError


def edited(file: Path, change: Callable[[CommentedMap], None]) -> bytes:
    """The file's text after `change` edited its top-level mapping (an empty one when the file does not
    exist); the file itself is not written."""
    editor = YAML()  # round trip
    editor.indent(mapping=2, sequence=4, offset=2)
    editor.preserve_quotes = True
    editor.width = 1 << 16  # long lines stay one line
    try:
        document = editor.load(file.read_text()) if file.is_file() else None
    except YAMLError as error:
        raise UserError(f"{file}: not valid YAML, so it was left as it is: {' '.join(str(error).split())}") from None
    document = document if isinstance(document, CommentedMap) else CommentedMap()
    change(document)
    text = io.StringIO()
    editor.dump(document, text)
    return text.getvalue().encode()
