"""Toolchain profiles: containers/toolchain/profiles/<name>/, each its own image.

A profile says what its image needs (packages.txt: a package a line, `name[:arch][/suite] [>= floor]`),
what it is (profile.yaml: a description, Debian suites besides trixie, apt sources of its own) and what
exactly it was last built from (packages.lock: every package as `name:arch=version`). Its image is built
from containers/toolchain/'s shared files with the profile's files beside them (a profile's own file of
the same name wins, so a profile can bring its own guest-packages.txt).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import PROJECT_ROOT, strict_yaml
from ..errors import UserError

CONTEXT_DIR = PROJECT_ROOT / "containers" / "toolchain"
PROFILES_DIR = CONTEXT_DIR / "profiles"
DEFAULT_PROFILE = "trixie"  # Debian stable's own tools: what a board builds with unless it names another
PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
LOCK = "packages.lock"
# packages.txt: name, optional :arch and /suite, optional `>= floor`
SPEC_LINE = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9+.-]*)(?::(?P<arch>[a-z0-9-]+))?(?:/(?P<suite>[a-z0-9-]+))?(?:\s+>=\s*(?P<floor>\S+))?$"
)
# a Debian version: [epoch:]upstream[-revision], the upstream part starting with a digit
DEBIAN_VERSION = re.compile(r"^(?:\d+:)?\d[A-Za-z0-9.+~-]*$")
LOCK_LINE = re.compile(r"^(?P<package>[a-z0-9][a-z0-9+.-]*:[a-z0-9-]+)=(?P<version>[A-Za-z0-9.+~:-]+)$")


class ProfileFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: Annotated[str, Field(min_length=1)]
    apt_suites: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]] = []
    # whole sources.list lines, e.g. a lab's own repository: "deb [trusted=yes] http://apt.lab/ ./"
    apt_sources: list[Annotated[str, Field(pattern=r"^deb \S.*$")]] = []


@dataclass(frozen=True)
class PackageSpec:
    name: str
    arch: str | None
    suite: str | None
    floor: str | None


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    apt_suites: tuple[str, ...]
    folder: Path
    apt_sources: tuple[str, ...] = ()

    def context_files(self) -> dict[str, bytes]:
        """The image's build context: the shared files, then the profile's own beside them (its lock
        empty when it has none yet)."""
        shared = {p.name: p.read_bytes() for p in CONTEXT_DIR.iterdir() if p.is_file()}
        return {LOCK: b""} | shared | {p.name: p.read_bytes() for p in self.folder.iterdir() if p.is_file()}

    def packages(self) -> list[PackageSpec]:
        """packages.txt's lines; a line that is not `name[:arch][/suite] [>= floor]` is one error naming it."""
        file, specs = self.folder / "packages.txt", []
        for number, line in _meaningful_lines(file):
            match = SPEC_LINE.match(line)
            if match is None or (match["floor"] and not _is_version(match["floor"])):
                raise UserError(f"{_shown(file)}:{number}: {line!r} is not `name[:arch][/suite] [>= version]`")
            specs.append(PackageSpec(match["name"], match["arch"], match["suite"], match["floor"]))
        return specs

    def lock(self) -> dict[str, str]:
        """packages.lock: `name:arch` -> version; empty before the first `invoke toolchain --update-lock`."""
        file, pins = self.folder / LOCK, dict[str, str]()
        if not file.is_file():
            return pins
        for number, line in _meaningful_lines(file):
            match = LOCK_LINE.match(line)
            if match is None or not _is_version(match["version"]):
                raise UserError(f"{_shown(file)}:{number}: {line!r} is not `name:arch=version`")
            pins[match["package"]] = match["version"]
        return pins

    def check_lock(self) -> None:
        """A lock may not hold a version the profile refuses: one line naming both."""
        from debian.debian_support import Version  # Debian's own order; only where images are built

        lock = self.lock()
        for spec in self.packages():
            locked = locked_version(lock, spec.name, spec.arch)
            if spec.floor and locked and Version(locked) < Version(spec.floor):
                raise UserError(
                    f"{_shown(self.folder / LOCK)}: {spec.name} {locked} is below packages.txt's floor {spec.floor}: "
                    f"invoke toolchain --profile {self.name} --update-lock takes what the archive offers now"
                )

    def kernel_sources(self) -> list[str]:
        """The Debian linux-source packages the image holds, for `kernel.source.debian`."""
        return [spec.name for spec in self.packages() if spec.name.startswith("linux-source-")]


def locked_version(lock: dict[str, str], name: str, arch: str | None = None) -> str | None:
    """A package's version in a lock (`name:arch` keys); without an arch, the first of its architectures."""
    if arch:
        return lock.get(f"{name}:{arch}")
    return next((version for package, version in lock.items() if package.split(":", 1)[0] == name), None)


def _meaningful_lines(file: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line with more than a comment, as packages.txt and the lock are read."""
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if line := line.split("#", 1)[0].strip():
            yield number, line


def _is_version(text: str) -> bool:
    return DEBIAN_VERSION.match(text) is not None


def _shown(file: Path) -> str:
    return str(file.relative_to(PROJECT_ROOT)) if file.is_relative_to(PROJECT_ROOT) else str(file)


def profile_names(profiles_dir: Path = PROFILES_DIR) -> list[str]:
    return sorted(p.name for p in profiles_dir.iterdir() if (p / "profile.yaml").is_file() and PROFILE_NAME.match(p.name))


@cache
def load_profile(name: str, profiles_dir: Path = PROFILES_DIR) -> Profile:
    """The profile called `name`; an unknown name is one line listing the known ones."""
    file = profiles_dir / name / "profile.yaml"
    if not PROFILE_NAME.match(name) or not file.is_file():
        raise UserError(f"no toolchain profile {name!r} (profiles: {', '.join(profile_names(profiles_dir))})")
    display = _shown(file)
    try:
        spec = ProfileFile.model_validate(strict_yaml.load(file, display).value)
    except ValidationError as error:
        first = error.errors()[0]
        raise UserError(f"{display}: {strict_yaml.dotted(first['loc'])}: {first['msg']}") from None
    if not (file.parent / "packages.txt").is_file():
        raise UserError(f"{display}: the profile has no packages.txt beside it")
    return Profile(
        name=name,
        description=spec.description,
        apt_suites=tuple(spec.apt_suites),
        folder=file.parent,
        apt_sources=tuple(spec.apt_sources),
    )
