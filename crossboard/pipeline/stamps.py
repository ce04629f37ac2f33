"""Stamps: what a piece of build work last read, so that work is skipped when nothing it reads changed.

A stamp holds the hash of the work's inputs, its note and what it wrote into the manifest; a skipped
step gives the manifest the same values again. A stamp is removed before its work runs and written
after it succeeded, so an interrupted or failed run never looks current.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..artifacts.files import write_atomically

# What a content hash leaves out: build products beside the sources, and the editor files `invoke ide`
# writes there.
NOT_INPUTS = frozenset({"target", ".git", "rust-project.json", "compile_commands.json"})


def digest(*parts: str | bytes) -> str:
    """One hash of several values, each kept apart from the next."""
    hasher = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        hasher.update(len(data).to_bytes(8, "big") + data)
    return hasher.hexdigest()


def folder_digest(folder: Path) -> str:
    """The names and contents of every file under `folder` (build products left out)."""
    parts: list[str | bytes] = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if NOT_INPUTS & set(relative.parts) or not path.is_file():
            continue
        parts += [str(relative), path.read_bytes()]
    return digest(*parts)


def current(stamp: Path, inputs: str | None) -> dict | None:
    """The stamp's record when it was written for exactly these inputs; None (run the work) otherwise.
    `inputs` None means a doubt: the work always runs."""
    if inputs is None or not stamp.is_file():
        return None
    try:
        record = json.loads(stamp.read_text())
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("inputs") == inputs else None


def forget(stamp: Path) -> None:
    stamp.unlink(missing_ok=True)


def remember(stamp: Path, inputs: str | None, note: str = "", manifest: dict | None = None) -> None:
    if inputs is not None:
        write_atomically(stamp, json.dumps({"inputs": inputs, "note": note, "manifest": manifest or {}}).encode())
