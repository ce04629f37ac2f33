"""A profile's image carried as a file (`docker save` format), to a machine that cannot rebuild it."""

from __future__ import annotations

from pathlib import Path

from docker.errors import APIError, ImageLoadError

from ..artifacts.files import writing_atomically
from ..errors import UserError
from ..settings import Settings
from .engine import docker_client
from .image import LABEL_PREFIX, current_image, tag_of
from .profiles import Profile


def export_image(settings: Settings, profile: Profile, file: Path) -> str:
    """Write the profile's current image to `file` (whole or not at all); its tag."""
    client = docker_client()
    image = current_image(client, settings, profile)
    if image is None:
        raise UserError(
            f"--export: profile {profile.name} has no image here yet: invoke toolchain --profile {profile.name} first"
        )
    tag = tag_of(image)
    try:
        with writing_atomically(file) as out:
            for chunk in image.save(named=tag):
                out.write(chunk)
    except OSError as error:
        raise UserError(f"--export: cannot write {file}: {error.strerror or error}") from None
    return tag


def import_image(file: Path) -> list[str]:
    """Load images from a `docker save` file; the toolchain images among them, by tag."""
    try:
        with file.open("rb") as archive:
            loaded = docker_client().images.load(archive)
    except OSError as error:
        raise UserError(f"--import: cannot read {file}: {error.strerror or error}") from None
    except (APIError, ImageLoadError) as error:
        raise UserError(f"--import: {file} is not an image archive docker can load ({error})") from None
    tags = [tag for image in loaded if f"{LABEL_PREFIX}profile" in image.labels for tag in image.tags]
    if not tags:
        raise UserError(f"--import: {file} holds no crossboard toolchain image")
    return tags
