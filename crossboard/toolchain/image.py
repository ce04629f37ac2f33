"""A profile's toolchain image: built from its recipe at the versions of its lock, found again by labels.

The recipe is everything that decides what an image is but the exact versions (the Dockerfile, the
scripts, the profile's packages.txt and profile.yaml, the base and the mirror); the lock (packages.lock)
says which versions. An image built now may hold other versions than the lock where the archive no
longer offers the lock's: it says so, and it is tagged and labelled by what it really holds. An image is
reused when it was built from this recipe and holds exactly the lock, or was built from this very lock.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import tarfile
from dataclasses import dataclass
from urllib.parse import urlsplit

import docker
from docker.errors import APIError, BuildError, DockerException

from ..errors import InfrastructureError, UserError
from ..progress import Progress
from ..settings import Settings
from .base_image import ensure_base_image
from .engine import docker_client
from .profiles import LOCK, Profile, locked_version
from .stream import Tee

REPOSITORY = "crossboard/toolchain"
LABEL_PREFIX = "org.crossboard."
INSTALLED = "/usr/share/crossboard/packages.installed"
DOCKERFILE_STEP = re.compile(r"^Step (\d+)/(\d+) :")
# the line apt-packages prints before it fails: the exit code crossboard should give, and why
SCRIPT_ERROR = re.compile(r"^crossboard-error: ([23]) (.+)$", re.MULTILINE)
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
MOVED_SHOWN = 6  # moved packages named in the one line; the manifest and labels hold them all


@dataclass(frozen=True)
class ToolchainImage:
    ref: str
    id: str
    built_now: bool
    profile: str
    moved: tuple[tuple[str, str, str], ...] = ()  # (package, lock's version, version installed) where they differ


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def context_hash(files: dict[str, bytes], base_image: str) -> str:
    """The files of a build context, and the base it starts from."""
    return _digest(base_image.encode(), *(name.encode() + b"\0" + files[name] for name in sorted(files)))


def recipe_hash(settings: Settings, profile: Profile) -> str:
    files = {name: data for name, data in profile.context_files().items() if name != LOCK}
    return _digest(context_hash(files, settings.base_image).encode(), settings.debian_mirror.encode())


def lock_text(pins: dict[str, str]) -> str:
    return "".join(f"{package}={pins[package]}\n" for package in sorted(pins))


def contents_hash(recipe: str, pins: dict[str, str]) -> str:
    return _digest(recipe.encode(), lock_text(pins).encode())


def moved_packages(lock: dict[str, str], installed: dict[str, str]) -> list[tuple[str, str, str]]:
    """The packages the lock and the image both hold, at other versions."""
    return [
        (package, lock[package], installed[package])
        for package in sorted(lock)
        if installed.get(package, lock[package]) != lock[package]
    ]


def moved_message(profile: Profile, moved: list[tuple[str, str, str]]) -> str:
    shown = ", ".join(f"{package} {old} -> {new}" for package, old, new in moved[:MOVED_SHOWN])
    more = f" and {len(moved) - MOVED_SHOWN} more" if len(moved) > MOVED_SHOWN else ""
    return (
        f"toolchain {profile.name}: the archive no longer offers {len(moved)} of packages.lock's versions, "
        f"installed what it offers now: {shown}{more}. The locked ones come back through a mirror or apt proxy "
        f"that kept them (--mirror, --apt-proxy; docs/toolchain.md); "
        f"`invoke toolchain --profile {profile.name} --update-lock` locks these"
    )


def current_image(client: docker.DockerClient, settings: Settings, profile: Profile):
    """The newest image built from this recipe that holds the lock's versions, or was built from this lock."""
    recipe, lock = recipe_hash(settings, profile), profile.lock()
    try:
        candidates = client.images.list(filters={"label": [f"{LABEL_PREFIX}recipe={recipe}"]})
    except DockerException as error:
        raise InfrastructureError(f"the Docker engine cannot list images: {error}") from None
    wanted = (
        lambda image: image.labels.get(f"{LABEL_PREFIX}contents") == contents_hash(recipe, lock),
        lambda image: image.labels.get(f"{LABEL_PREFIX}lock") == contents_hash(recipe, lock),
    )
    for matches in wanted:
        found = sorted((image for image in candidates if matches(image)), key=lambda image: image.attrs["Created"])
        if found:
            return found[-1]
    return None


def image_ref(client: docker.DockerClient | None, settings: Settings, profile: Profile) -> str:
    """The tag of the profile's current image; `<repository>:<profile>` while there is none (a plan)."""
    image = current_image(client, settings, profile) if client is not None else None
    return tag_of(image) if image is not None else f"{REPOSITORY}:{profile.name}"


def tag_of(image) -> str:
    """The toolchain repository's tag of an image crossboard built (its id where it has none)."""
    return next((tag for tag in image.tags if tag.startswith(f"{REPOSITORY}:")), image.id)


def packages_label(text: str) -> dict[str, str]:
    """The `org.crossboard.packages` label (as the manifest's `image` copies it): name -> version."""
    return dict(item.split("=", 1) for item in text.split())


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


def check_proxy(proxy: str) -> None:
    """An apt proxy that does not answer is one line before anything is made."""
    parts = urlsplit(proxy)
    if parts.scheme != "http" or not parts.hostname:
        raise UserError(f"apt proxy {proxy!r}: give it as http://HOST:PORT (CROSSBOARD_APT_PROXY or --apt-proxy)")
    try:
        socket.create_connection((parts.hostname, parts.port or 80), timeout=5).close()
    except OSError as error:
        raise InfrastructureError(f"apt proxy {proxy}: cannot connect ({error.strerror or error}); is it running?") from None


def ensure_toolchain(
    client: docker.DockerClient, settings: Settings, profile: Profile, tee: Tee, progress_mode: str = "off", fresh: bool = False
) -> ToolchainImage:
    """The profile's current image, built when there is none. `fresh`: built again at what the archive
    offers now, with no lock and no build cache (for --update-lock)."""
    profile.check_lock()
    image = None if fresh else current_image(client, settings, profile)
    if image is not None:
        return ToolchainImage(ref=tag_of(image), id=image.id, built_now=False, profile=profile.name, moved=_moved_label(image))
    if settings.apt_proxy:
        check_proxy(settings.apt_proxy)
    ensure_base_image(client, settings, tee, progress_mode)
    lock = {} if fresh else profile.lock()
    built = build_image(client, settings, profile, tee, progress_mode, lock=lock, use_cache=not fresh)
    installed = installed_packages(client, built)
    moved = moved_packages(lock, installed)
    ref = _label(client, settings, profile, built, lock, installed, moved)
    if moved:
        tee.line(moved_message(profile, moved))
    return ToolchainImage(ref=ref, id=client.images.get(ref).id, built_now=True, profile=profile.name, moved=tuple(moved))


def build_image(
    client: docker.DockerClient,
    settings: Settings,
    profile: Profile,
    tee: Tee,
    progress_mode: str = "off",
    lock: dict[str, str] | None = None,
    use_cache: bool = True,
) -> str:
    """Build the profile's image on its base at `lock`'s versions where the archive has them; its id,
    untagged (it is tagged once its contents are known). `use_cache=False`: every step again."""
    files = profile.context_files() | {LOCK: lock_text(profile.lock() if lock is None else lock).encode()}
    tee.line(f"building the toolchain image of profile {profile.name} from {profile.folder} (log: {tee.log_path})")
    progress = Progress(f"toolchain image {profile.name}", unit="Dockerfile steps", pattern=None, mode=progress_mode)
    proxy = {"http_proxy": settings.apt_proxy} if settings.apt_proxy else {}
    mirror = {"MIRROR": settings.debian_mirror} if settings.mirror_chosen else {}
    built, said = "", []
    try:
        for chunk in client.api.build(
            fileobj=context_tar(files),
            custom_context=True,
            buildargs={
                "BASE_IMAGE": settings.base_image,
                "APT_SUITES": " ".join(profile.apt_suites),
                "APT_SOURCES": "\n".join(profile.apt_sources),
                **mirror,
                **proxy,
            },
            network_mode="host",
            nocache=not use_cache,
            rm=True,
            forcerm=True,
            decode=True,
        ):
            if "stream" in chunk:
                tee.write(chunk["stream"].encode())
                said.append(chunk["stream"])
                if step := DOCKERFILE_STEP.match(chunk["stream"]):
                    progress.set(int(step[1]) - 1, int(step[2]))  # a step is done when the next one starts
                else:
                    progress.advance(0)  # time passes within a step: let the display say so
            built = chunk.get("aux", {}).get("ID", built)
            if "error" in chunk:
                _raise_build_error(profile, "".join(said), chunk["error"].strip(), tee)
    except (APIError, BuildError) as error:
        raise InfrastructureError(f"building the toolchain image of profile {profile.name} failed: {error}") from None
    progress.set(progress.expected or progress.done)
    progress.finish()
    if not built:
        built = re.findall(r"Successfully built ([0-9a-f]+)", "".join(said))[-1]
    return built


def _raise_build_error(profile: Profile, output: str, error: str, tee: Tee):
    """What apt-packages said it failed of, with its exit code (2: the profile's files, 3: the archive
    or the network); else the build's own error, as the machine's."""
    output = ANSI_COLOUR.sub("", output)  # the classic builder colours what a step wrote to stderr
    said = SCRIPT_ERROR.findall(output)
    if said:
        code, message = said[-1]
        kind = UserError if code == "2" else InfrastructureError
        raise kind(f"toolchain {profile.name}: {message} (log: {tee.log_path})")
    last = [line for line in output.splitlines() if line.startswith(("E: ", "W: "))][-1:]
    raise InfrastructureError(
        f"building the toolchain image of profile {profile.name} failed: {(last or [error])[0]} (log: {tee.log_path})"
    )


def installed_packages(client: docker.DockerClient, image_id: str) -> dict[str, str]:
    """What the image holds: `name:arch` -> version, as apt-packages recorded it."""
    listing = client.containers.run(image_id, ["cat", INSTALLED], remove=True, network_disabled=True).decode()
    return dict(line.split("=", 1) for line in listing.splitlines() if "=" in line)


def _label(client, settings: Settings, profile: Profile, image_id: str, lock, installed, moved) -> str:
    """Tag the image by what it holds, its labels saying so (a label-only build on top: cheap)."""
    recipe = recipe_hash(settings, profile)
    contents = contents_hash(recipe, installed)
    named = [f"{spec.name}={locked_version(installed, spec.name, spec.arch)}" for spec in profile.packages()]
    labels = {
        f"{LABEL_PREFIX}profile": profile.name,
        f"{LABEL_PREFIX}recipe": recipe,
        f"{LABEL_PREFIX}lock": contents_hash(recipe, lock),
        f"{LABEL_PREFIX}contents": contents,
        f"{LABEL_PREFIX}packages": " ".join(named),
        f"{LABEL_PREFIX}moved": " ".join(f"{package}={old}->{new}" for package, old, new in moved),
        f"{LABEL_PREFIX}base-image": settings.base_image,
    }
    ref = f"{REPOSITORY}:{profile.name}-{contents}"
    # one LABEL instruction: the classic builder commits a layer for each label it is given apart
    dockerfile = f"FROM {image_id}\nLABEL " + " ".join(f"{key}={json.dumps(value)}" for key, value in labels.items()) + "\n"
    try:
        context = context_tar({"Dockerfile": dockerfile.encode()})
        # rm: the classic builder otherwise leaves the container it committed the LABEL step in
        for chunk in client.api.build(fileobj=context, custom_context=True, tag=ref, rm=True, forcerm=True, decode=True):
            if "error" in chunk:
                raise InfrastructureError(f"labelling {ref} failed: {chunk['error'].strip()}")
    except (APIError, BuildError) as error:
        raise InfrastructureError(f"labelling {ref} failed: {error}") from None
    return ref


def _moved_label(image) -> tuple[tuple[str, str, str], ...]:
    moved = []
    for item in image.labels.get(f"{LABEL_PREFIX}moved", "").split():
        package, versions = item.split("=", 1)
        old, new = versions.split("->", 1)
        moved.append((package, old, new))
    return tuple(moved)


def prepare_toolchain(
    settings: Settings, profile: Profile, echo: bool = True, verbose: bool = False, plain: bool = False, fresh: bool = False
) -> tuple[docker.DockerClient, ToolchainImage]:
    """The engine and the profile's current image, built first when there is none (`fresh`: see
    ensure_toolchain). `echo`: say anything at all; `verbose`: the tools' own output too; `plain`:
    progress as a line a minute."""
    client = docker_client()
    with Tee(settings.cache_dir / "logs" / f"toolchain-{profile.name}.log", echo=echo and verbose, announce=echo) as tee:
        return client, ensure_toolchain(client, settings, profile, tee, Progress.mode_for(echo, plain or verbose), fresh)
