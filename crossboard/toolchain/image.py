"""The pinned toolchain image: tagged by the hash of its build context, built only when that changes."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, BuildError, ImageNotFound

from .. import PROJECT_ROOT
from ..errors import InfrastructureError
from ..progress import Progress
from ..settings import Settings
from .base_image import ensure_base_image
from .engine import docker_client
from .stream import Tee

CONTEXT_DIR = PROJECT_ROOT / "containers" / "toolchain"
REPOSITORY = "crossboard/toolchain"
LABEL_PREFIX = "org.crossboard."
DOCKERFILE_STEP = re.compile(r"^Step (\d+)/(\d+) :")


@dataclass(frozen=True)
class ToolchainImage:
    ref: str
    id: str
    built_now: bool


def context_hash(context_dir: Path, base_image: str) -> str:
    """Everything that decides the image's content: the context's files and the base it starts from."""
    digest = hashlib.sha256(base_image.encode() + b"\0")
    for file in sorted(p for p in context_dir.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(context_dir)).encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:16]


def image_ref(settings: Settings, context_dir: Path = CONTEXT_DIR) -> str:
    return f"{REPOSITORY}:{context_hash(context_dir, settings.base_image)}"


def pinned_packages(context_dir: Path = CONTEXT_DIR) -> dict[str, str]:
    """packages.txt's `name=version` lines; unpinned helpers (make, bc, ...) are left out."""
    pins = {}
    for line in (context_dir / "packages.txt").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            name, version = line.split("=", 1)
            pins[name.strip()] = version.strip()
    return pins


def find_image(client: docker.DockerClient, ref: str):
    try:
        return client.images.get(ref)
    except ImageNotFound:
        return None


def ensure_toolchain(
    client: docker.DockerClient, settings: Settings, tee: Tee, progress_mode: str = "off", context_dir: Path = CONTEXT_DIR
) -> ToolchainImage:
    ref = image_ref(settings, context_dir)
    image = find_image(client, ref)
    if image is not None:
        return ToolchainImage(ref=ref, id=image.id, built_now=False)
    ensure_base_image(client, settings, tee, progress_mode)
    # Few labels: the legacy builder commits one layer for each.
    labels = {
        f"{LABEL_PREFIX}packages": " ".join(f"{name}={version}" for name, version in pinned_packages(context_dir).items()),
        f"{LABEL_PREFIX}base-image": settings.base_image,
        f"{LABEL_PREFIX}context-hash": ref.split(":", 1)[1],
    }
    tee.line(f"building {ref} from {context_dir} (log: {tee.log_path})")
    progress = Progress("toolchain image", unit="Dockerfile steps", pattern=None, mode=progress_mode)
    try:
        for chunk in client.api.build(
            path=str(context_dir),
            tag=ref,
            buildargs={"BASE_IMAGE": settings.base_image},
            labels=labels,
            network_mode="host",
            rm=True,
            forcerm=True,
            decode=True,
        ):
            if "stream" in chunk:
                tee.write(chunk["stream"].encode())
                if step := DOCKERFILE_STEP.match(chunk["stream"]):
                    progress.set(int(step[1]) - 1, int(step[2]))  # a step is done when the next one starts
                else:
                    progress.advance(0)  # time passes within a step: let the display say so
            if "error" in chunk:
                raise InfrastructureError(f"building {ref} failed: {chunk['error'].strip()} (log: {tee.log_path})")
    except (APIError, BuildError) as error:
        raise InfrastructureError(f"building {ref} failed: {error}") from None
    progress.set(progress.expected or progress.done)
    progress.finish()
    return ToolchainImage(ref=ref, id=client.images.get(ref).id, built_now=True)


def prepare_toolchain(
    settings: Settings, echo: bool = True, verbose: bool = False, plain: bool = False
) -> tuple[docker.DockerClient, ToolchainImage]:
    """The engine and the current toolchain image, built first when its context changed. `echo`: say
    anything at all; `verbose`: the tools' own output too; `plain`: progress as a line a minute."""
    client = docker_client()
    with Tee(settings.cache_dir / "logs" / "toolchain.log", echo=echo and verbose, announce=echo) as tee:
        return client, ensure_toolchain(client, settings, tee, Progress.mode_for(echo, plain or verbose))
