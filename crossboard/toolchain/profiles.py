"""Toolchain profiles: containers/toolchain/profiles/<name>/, each its own pinned image.

A profile is a packages.txt (name=version pins) and a profile.yaml (what it is, which Debian suites
besides trixie it installs from). Its image is built from containers/toolchain/'s shared files with
the profile's files beside them, and tagged by the hash of exactly that context.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import PROJECT_ROOT
from ..board import strict_yaml
from ..errors import UserError

CONTEXT_DIR = PROJECT_ROOT / "containers" / "toolchain"
PROFILES_DIR = CONTEXT_DIR / "profiles"
DEFAULT_PROFILE = "trixie"  # Debian stable's own tools: what a board builds with unless it names another
PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


class ProfileFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: Annotated[str, Field(min_length=1)]
    apt_suites: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]] = []


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    apt_suites: tuple[str, ...]

    @property
    def folder(self) -> Path:
        return PROFILES_DIR / self.name

    def context_files(self) -> dict[str, bytes]:
        """The image's build context: the shared files, then the profile's own beside them."""
        shared = {p.name: p.read_bytes() for p in CONTEXT_DIR.iterdir() if p.is_file()}
        return shared | {p.name: p.read_bytes() for p in self.folder.iterdir() if p.is_file()}

    def pinned_packages(self) -> dict[str, str]:
        """packages.txt's `name=version` lines; unpinned helpers (make, bc, ...) are left out."""
        pins = {}
        for line in (self.folder / "packages.txt").read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                name, version = line.split("=", 1)
                pins[name.strip()] = version.strip()
        return pins

    def kernel_sources(self) -> list[str]:
        """The Debian linux-source packages the image holds, for `kernel.source.debian`."""
        return [name for name in self.pinned_packages() if name.startswith("linux-source-")]


def profile_names() -> list[str]:
    return sorted(p.name for p in PROFILES_DIR.iterdir() if (p / "profile.yaml").is_file() and PROFILE_NAME.match(p.name))


@cache
def load_profile(name: str) -> Profile:
    """The profile called `name`; an unknown name is one line listing the known ones."""
    file = PROFILES_DIR / name / "profile.yaml"
    if not PROFILE_NAME.match(name) or not file.is_file():
        raise UserError(f"no toolchain profile {name!r} (profiles: {', '.join(profile_names())})")
    display = str(file.relative_to(PROJECT_ROOT))
    try:
        spec = ProfileFile.model_validate(strict_yaml.load(file, display).value)
    except ValidationError as error:
        first = error.errors()[0]
        raise UserError(f"{display}: {strict_yaml.dotted(first['loc'])}: {first['msg']}") from None
    if not (file.parent / "packages.txt").is_file():
        raise UserError(f"{display}: the profile has no packages.txt beside it")
    return Profile(name=name, description=spec.description, apt_suites=tuple(spec.apt_suites))
