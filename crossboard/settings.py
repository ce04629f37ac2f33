"""Where crossboard keeps things, and the knobs a lab sets through the environment."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import PROJECT_ROOT

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_BASE_IMAGE = "crossboard/base:trixie"


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    out_dir: Path
    base_image: str
    debian_mirror: str

    @classmethod
    def from_environment(cls, base_image: str | None = None, debian_mirror: str | None = None) -> "Settings":
        xdg_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        return cls(
            cache_dir=Path(os.environ.get("CROSSBOARD_CACHE", xdg_cache / "crossboard")),
            out_dir=Path(os.environ.get("CROSSBOARD_OUT", PROJECT_ROOT / "out")),
            base_image=base_image or os.environ.get("CROSSBOARD_BASE_IMAGE", DEFAULT_BASE_IMAGE),
            debian_mirror=debian_mirror or os.environ.get("CROSSBOARD_DEBIAN_MIRROR", DEFAULT_MIRROR),
        )
