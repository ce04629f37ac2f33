"""packages.lock: written from what a profile's image really holds, with the diff shown."""

from __future__ import annotations

import difflib

from ..artifacts.files import write_atomically
from ..settings import Settings
from .image import ToolchainImage, installed_packages, lock_text, prepare_toolchain
from .profiles import LOCK, Profile


def render_lock(profile: Profile, image: ToolchainImage, installed: dict[str, str], settings: Settings) -> str:
    return (
        f"# profile {profile.name}: the versions its image was built from, `name:arch=version` a line.\n"
        "# Written by `invoke toolchain --update-lock`; a build takes these where the archive still offers them.\n"
        f"# base: {settings.base_image}; image: {image.ref} ({image.id})\n" + lock_text(installed)
    )


def update_lock(settings: Settings, profile: Profile, echo: bool = True, verbose: bool = False, plain: bool = False) -> list[str]:
    """Build the profile's image at what the archive offers now and lock that; the changed lines."""
    client, image = prepare_toolchain(settings, profile, echo, verbose, plain, fresh=True)
    installed = installed_packages(client, image.id)
    file = profile.folder / LOCK
    before = lock_text(profile.lock()).splitlines()
    write_atomically(file, render_lock(profile, image, installed, settings).encode())
    return [
        line
        for line in difflib.unified_diff(before, lock_text(installed).splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
