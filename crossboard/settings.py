"""Where crossboard keeps things, and the knobs a lab sets through the environment."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import PROJECT_ROOT
from .artifacts.files import write_atomically

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_BASE_IMAGE = "crossboard/base:trixie"


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    out_dir: Path
    base_image: str
    debian_mirror: str

    @classmethod
    def from_environment(cls, base_image: str | None = None, debian_mirror: str | None = None) -> Settings:
        """An option wins over the environment, which wins over what `invoke toolchain` was last told
        (remembered in the cache), which wins over the default."""
        xdg_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        cache_dir = Path(os.environ.get("CROSSBOARD_CACHE", xdg_cache / "crossboard"))
        chosen = _remembered(cache_dir)
        return cls(
            cache_dir=cache_dir,
            out_dir=Path(os.environ.get("CROSSBOARD_OUT", PROJECT_ROOT / "out")),
            base_image=base_image or os.environ.get("CROSSBOARD_BASE_IMAGE") or chosen.get("base_image")
            or DEFAULT_BASE_IMAGE,
            debian_mirror=debian_mirror or os.environ.get("CROSSBOARD_DEBIAN_MIRROR") or chosen.get("debian_mirror")
            or DEFAULT_MIRROR,
        )

    def remember_toolchain_choice(self) -> None:
        """Keep the base image and mirror `invoke toolchain` was given for every later command."""
        write_atomically(self.cache_dir / TOOLCHAIN_CHOICE, json.dumps(
            {"base_image": self.base_image, "debian_mirror": self.debian_mirror}).encode())


TOOLCHAIN_CHOICE = "toolchain-choice.json"


def _remembered(cache_dir: Path) -> dict[str, str]:
    try:
        chosen = json.loads((cache_dir / TOOLCHAIN_CHOICE).read_text())
    except (OSError, ValueError):
        return {}
    return {key: value for key, value in chosen.items() if isinstance(value, str)} if isinstance(chosen, dict) else {}
