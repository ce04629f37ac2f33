"""The toolchain image's base: pulled where a registry answers, else made by debootstrap + import.

Labs behind firewalls reach a Debian mirror but no container registry; debootstrap of trixie into
a folder, packed and imported through the Docker API, gives the same base as `debian:trixie`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound

from ..errors import InfrastructureError
from ..progress import Progress, Remembered
from ..settings import Settings
from .stream import Tee

MADE_BY_US = "crossboard/base:"
# debootstrap says a line for each package it retrieves, validates, extracts, unpacks and configures.
DEBOOTSTRAP_UNIT = re.compile(rb"^I: (?:Retrieving|Validating|Extracting|Unpacking|Configuring) ")
SUITE = "trixie"


def ensure_base_image(client: docker.DockerClient, settings: Settings, tee: Tee, progress_mode: str = "off") -> str:
    """The base image's id, making or pulling it when this engine does not have it."""
    ref = settings.base_image
    try:
        return client.images.get(ref).id
    except ImageNotFound:
        pass
    if ref.startswith(MADE_BY_US):
        return make_base_image(client, ref, settings, tee, progress_mode)
    tee.line(f"pulling {ref}")
    try:
        return client.images.pull(ref).id
    except APIError as error:
        raise InfrastructureError(
            f"cannot pull the base image {ref} ({error.explanation}); without a registry, leave "
            f"CROSSBOARD_BASE_IMAGE unset and crossboard makes {MADE_BY_US}{SUITE} with debootstrap"
        ) from None


def make_base_image(client: docker.DockerClient, ref: str, settings: Settings, tee: Tee, progress_mode: str = "off") -> str:
    debootstrap = shutil.which("debootstrap") or next(
        (p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if os.access(p, os.X_OK)), None
    )
    if debootstrap is None:
        raise InfrastructureError("debootstrap is not installed: apt-get install debootstrap (see README)")
    if os.geteuid() != 0:
        raise InfrastructureError(f"making the base image {ref} with debootstrap needs root: run `sudo invoke toolchain` once")
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="base-", dir=settings.cache_dir) as scratch:
        root = Path(scratch) / "root"
        tarball = Path(scratch) / "root.tar"
        via = f" through {settings.apt_proxy}" if settings.apt_proxy else ""
        tee.line(f"making {ref}: debootstrap {SUITE} from {settings.debian_mirror}{via} (log: {tee.log_path})")
        memory = Remembered(settings.cache_dir / "progress.json")
        tee.progress = Progress(
            "debootstrap", unit="package steps", expected=memory.get("debootstrap"), pattern=DEBOOTSTRAP_UNIT, mode=progress_mode
        )
        try:
            proxy = {"http_proxy": settings.apt_proxy} if settings.apt_proxy else {}
            _run(tee, [debootstrap, "--variant=minbase", SUITE, str(root), settings.debian_mirror], proxy)
            memory.put("debootstrap", tee.progress.done)
        finally:
            tee.progress.finish()
            tee.progress = None
            _unmount_below(root)
        # /proc and /sys are mount points inside the image, never content.
        _run(
            tee, ["tar", "-C", str(root), "--numeric-owner", "--exclude=./proc/*", "--exclude=./sys/*", "-cf", str(tarball), "."]
        )
        repository, tag = ref.rsplit(":", 1)
        tee.line(f"importing {tarball.stat().st_size // 2**20} MiB as {ref}")
        client.api.import_image(src=str(tarball), repository=repository, tag=tag, changes=['CMD ["/bin/bash"]'])
    return client.images.get(ref).id


def _run(tee: Tee, argv: list[str], env: dict[str, str] | None = None) -> None:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    stdout = process.stdout
    assert stdout is not None  # stdout=PIPE
    for chunk in iter(lambda: stdout.read1(65536), b""):  # type: ignore[attr-defined]
        tee.write(chunk)
    if process.wait() != 0:
        raise InfrastructureError(f"{Path(argv[0]).name} failed with exit code {process.returncode}: see {tee.log_path}")


def _unmount_below(root: Path) -> None:
    """debootstrap leaves /proc (and sometimes /sys) of the new root mounted: tarring it would read the host's."""
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount_point in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", mount_point], check=False)
