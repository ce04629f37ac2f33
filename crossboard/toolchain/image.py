"""A profile's pinned toolchain image: tagged by the hash of its build context, built only when that changes."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from dataclasses import dataclass

import docker
from docker.errors import APIError, BuildError, ImageNotFound

from .. import PROJECT_ROOT
from ..errors import InfrastructureError
from ..progress import Progress
from ..settings import Settings
from .base_image import ensure_base_image
from .engine import docker_client
from .profiles import Profile
from .stream import Tee

REPOSITORY = "crossboard/toolchain"
LABEL_PREFIX = "org.crossboard."
DOCKERFILE_STEP = re.compile(r"^Step (\d+)/(\d+) :")


@dataclass(frozen=True)
class ToolchainImage:
    ref: str
    id: str
    built_now: bool
    profile: str


def context_hash(files: dict[str, bytes], base_image: str) -> str:
    """Everything that decides the image's content: the context's files and the base it starts from."""
    digest = hashlib.sha256(base_image.encode() + b"\0")
    for name in sorted(files):
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:16]


def image_ref(settings: Settings, profile: Profile) -> str:
    """`crossboard/toolchain:<profile>-<hash>`: the profile's name for people, the hash for change."""
    return f"{REPOSITORY}:{profile.name}-{context_hash(profile.context_files(), settings.base_image)}"


def context_tar(files: dict[str, bytes]) -> io.BytesIO:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name in sorted(files):
            member = tarfile.TarInfo(name)
            # scripts (record-versions) are run by the Dockerfile: a shebang marks them executable
            member.size, member.mode = len(files[name]), 0o755 if files[name].startswith(b"#!") else 0o644
            tar.addfile(member, io.BytesIO(files[name]))
    archive.seek(0)
    return archive


def find_image(client: docker.DockerClient, ref: str):
    try:
        return client.images.get(ref)
    except ImageNotFound:
        return None


def ensure_toolchain(
    client: docker.DockerClient, settings: Settings, profile: Profile, tee: Tee, progress_mode: str = "off"
) -> ToolchainImage:
    ref = image_ref(settings, profile)
    image = find_image(client, ref)
    if image is not None:
        return ToolchainImage(ref=ref, id=image.id, built_now=False, profile=profile.name)
    ensure_base_image(client, settings, tee, progress_mode)
    build_image(client, settings, profile, ref, tee, progress_mode)
    return ToolchainImage(ref=ref, id=client.images.get(ref).id, built_now=True, profile=profile.name)


def build_image(
    client: docker.DockerClient,
    settings: Settings,
    profile: Profile,
    ref: str,
    tee: Tee,
    progress_mode: str = "off",
    use_cache: bool = True,
) -> None:
    """Build the profile's image as `ref` on its base; `use_cache=False`: every step again (benchmarks)."""
    files = profile.context_files()  # read once: hashed for the label, sent as the context
    # Few labels: the legacy builder commits one layer for each.
    labels = {
        f"{LABEL_PREFIX}profile": profile.name,
        f"{LABEL_PREFIX}packages": " ".join(f"{name}={version}" for name, version in profile.pinned_packages().items()),
        f"{LABEL_PREFIX}base-image": settings.base_image,
        f"{LABEL_PREFIX}context-hash": context_hash(files, settings.base_image),
    }
    tee.line(f"building {ref} from {profile.folder.relative_to(PROJECT_ROOT)} (log: {tee.log_path})")
    progress = Progress(f"toolchain image {profile.name}", unit="Dockerfile steps", pattern=None, mode=progress_mode)
    try:
        for chunk in client.api.build(
            fileobj=context_tar(files),
            custom_context=True,
            tag=ref,
            buildargs={"BASE_IMAGE": settings.base_image, "APT_SUITES": " ".join(profile.apt_suites)},
            labels=labels,
            network_mode="host",
            nocache=not use_cache,
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


def prepare_toolchain(
    settings: Settings, profile: Profile, echo: bool = True, verbose: bool = False, plain: bool = False
) -> tuple[docker.DockerClient, ToolchainImage]:
    """The engine and the profile's current image, built first when its context changed. `echo`: say
    anything at all; `verbose`: the tools' own output too; `plain`: progress as a line a minute."""
    client = docker_client()
    with Tee(settings.cache_dir / "logs" / f"toolchain-{profile.name}.log", echo=echo and verbose, announce=echo) as tee:
        return client, ensure_toolchain(client, settings, profile, tee, Progress.mode_for(echo, plain or verbose))
