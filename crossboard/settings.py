"""Where crossboard keeps things, and the knobs a lab sets: options, the environment, invoke.yaml."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import PROJECT_ROOT
from .artifacts.files import write_atomically
from .errors import UserError

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_BASE_IMAGE = "crossboard/base:trixie"
DEFAULT_BOARD = "qemu-arm64"  # every task's board when none is named: the one that needs no hardware


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    out_dir: Path
    base_image: str
    debian_mirror: str
    apt_proxy: str = ""  # an apt caching proxy (http://HOST:PORT) for debootstrap and every apt in an image build
    board: str = DEFAULT_BOARD
    boards_dir: Path = PROJECT_ROOT / "boards"
    # host keys crossboard was told to trust (--trust-new-host, qemu.up), besides ~/.ssh/known_hosts
    known_hosts: Path = PROJECT_ROOT / ".crossboard" / "known_hosts"

    @classmethod
    def from_environment(
        cls,
        base_image: str | None = None,
        debian_mirror: str | None = None,
        config: Mapping[str, Any] | None = None,
        apt_proxy: str | None = None,
    ) -> Settings:
        """An option wins over the environment (CROSSBOARD_*), which wins over invoke's configuration
        (`config`: the `crossboard:` section of invoke.yaml), which wins over what `invoke toolchain` was
        last told (remembered in the cache), which wins over the default."""
        given = config or {}
        if not isinstance(given, Mapping):
            kind = type(given).__name__
            raise UserError(f"invoke.yaml: crossboard: is {kind}, not a mapping of settings (see docs/settings.md)")

        def chosen(key: str, remembered: dict[str, str] | None = None) -> str | None:
            value = os.environ.get(f"CROSSBOARD_{key.upper()}") or given.get(key)
            return str(value) if value else (remembered or {}).get(key)

        def folder(key: str, default: Path, is_file: bool = False) -> Path:
            """A path setting; a relative one is relative to the project, wherever invoke runs. What is
            there already must be what the setting names, a folder or a file."""
            value = chosen(key)
            path = PROJECT_ROOT / Path(value).expanduser() if value else default
            if path.exists() and path.is_dir() == is_file:
                found = "a folder" if is_file else "not a folder"
                raise setting_error(key, path, found)
            return path

        xdg_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        cache_dir = folder("cache", xdg_cache / "crossboard")
        remembered = _remembered(cache_dir)
        mirror = debian_mirror or chosen("debian_mirror", remembered) or DEFAULT_MIRROR
        return cls(
            cache_dir=cache_dir,
            out_dir=folder("out", PROJECT_ROOT / "out"),
            base_image=base_image or chosen("base_image", remembered) or default_base_image(mirror),
            debian_mirror=mirror,
            apt_proxy=apt_proxy or chosen("apt_proxy", remembered) or "",
            board=chosen("board") or DEFAULT_BOARD,
            boards_dir=folder("boards", cls.boards_dir),
            known_hosts=folder("known_hosts", cls.known_hosts, is_file=True),
        )

    @property
    def mirror_chosen(self) -> bool:
        """Another mirror than Debian's own: every apt in the image uses it too (a snapshot, a lab's)."""
        return self.debian_mirror != DEFAULT_MIRROR

    def remember_toolchain_choice(self) -> None:
        """Keep the base image and mirror `invoke toolchain` was given for every later command."""
        write_atomically(
            self.cache_dir / TOOLCHAIN_CHOICE,
            json.dumps(
                {"base_image": self.base_image, "debian_mirror": self.debian_mirror, "apt_proxy": self.apt_proxy}
            ).encode(),
        )


TOOLCHAIN_CHOICE = "toolchain-choice.json"


def setting_error(key: str, path: Path, found: str) -> UserError:
    """A path setting that names what is not there, said with where it can be set."""
    return UserError(f"crossboard.{key} (CROSSBOARD_{key.upper()} or invoke.yaml): {path}: {found}")


def default_base_image(mirror: str) -> str:
    """The base crossboard makes with debootstrap: one per mirror, since a snapshot's trixie is another."""
    if mirror == DEFAULT_MIRROR:
        return DEFAULT_BASE_IMAGE
    return f"{DEFAULT_BASE_IMAGE}-{hashlib.sha256(mirror.encode()).hexdigest()[:8]}"


def _remembered(cache_dir: Path) -> dict[str, str]:
    try:
        chosen = json.loads((cache_dir / TOOLCHAIN_CHOICE).read_text())
    except (OSError, ValueError):
        return {}
    return {key: value for key, value in chosen.items() if isinstance(value, str)} if isinstance(chosen, dict) else {}
