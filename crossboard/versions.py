"""Version numbers as tools and kernels print them (`rustc 1.85.1`, `GLIBC_2.41`), for the build's
tool checks and the deploy's checks against a board alike."""

from __future__ import annotations

import re


def version_in(text: str) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part or 0) for part in match.groups()) if match else None


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))
