"""`invoke doctor`: is this machine ready to build, and if not, what to do about it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from .board.load import LoadedBoard
from .errors import CrossboardError, InfrastructureError
from .pipeline import source
from .pipeline.toolcheck import check_tools
from .settings import Settings
from .toolchain.base_image import MADE_BY_US
from .toolchain.engine import docker_client
from .toolchain.image import LABEL_PREFIX, REPOSITORY, current_image, tag_of
from .toolchain.profiles import Profile, load_profile, profile_names
from .toolchain.runtime import DockerRuntime, Runtime


@dataclass(frozen=True)
class Check:
    ok: bool
    what: str
    todo: str = ""

    def line(self) -> str:
        return f"ok    {self.what}" if self.ok else f"FAIL  {self.what}\n      -> {self.todo}"


def run_checks(settings: Settings, board: LoadedBoard | None = None) -> list[Check]:
    checks: list[Check] = []
    try:
        client = docker_client()
    except CrossboardError as error:
        return [Check(False, "Docker engine", str(error))]
    checks.append(Check(True, f"Docker engine {client.version()['Version']} reachable"))
    if client.images.list(name=settings.base_image):
        checks.append(Check(True, f"base image {settings.base_image} present"))
    elif settings.base_image.startswith(MADE_BY_US):
        can_make = shutil.which("debootstrap") or os.path.exists("/usr/sbin/debootstrap")
        checks.append(
            Check(
                bool(can_make),
                f"base image {settings.base_image} not made yet; `invoke toolchain` makes it with debootstrap",
                "apt-get install debootstrap (and run `sudo invoke toolchain` once)",
            )
        )
    # the board's profile, or with no board every profile: its image, its tools
    profiles = [board.profile] if board is not None else [load_profile(name) for name in profile_names()]
    for profile in profiles:
        checks += _profile_checks(client, settings, profile, board)
    return checks


def _profile_checks(client, settings: Settings, profile: Profile, board: LoadedBoard | None) -> list[Check]:
    image = current_image(client, settings, profile)
    if image is None:
        stale = [
            tag
            for image in client.images.list(REPOSITORY, filters={"label": f"{LABEL_PREFIX}profile={profile.name}"})
            for tag in image.tags
        ]
        return [
            Check(
                False,
                f"no toolchain image of profile {profile.name} for its packages.txt and packages.lock"
                + (f" (stale: {', '.join(stale)})" if stale else ""),
                f"run `invoke toolchain --profile {profile.name}`",
            )
        ]
    ref = tag_of(image)
    moved = image.labels.get(f"{LABEL_PREFIX}moved", "")
    checks = [
        Check(True, f"toolchain image {ref} is current ({profile.description})"),
        Check(
            True,
            f"{profile.name}: the image holds packages.lock's versions"
            if not moved
            else f"{profile.name}: the archive moved past packages.lock, the image holds {moved} "
            f"(`invoke toolchain --profile {profile.name} --update-lock` locks them)",
        ),
    ]
    folders = {}
    plan = None
    if board is not None:
        plan = source.plan_source(board, settings.cache_dir)
        folders["sources"] = plan.mount
    with DockerRuntime(client, ref, folders, label="doctor") as runtime:
        code, versions = runtime.output(["cat", "/etc/crossboard-versions"])
        checks.append(
            Check(
                code == 0,
                f"{profile.name} tool versions: " + ", ".join(word for word in versions.split() if not word.startswith("deb:")),
                f"rebuild: invoke toolchain --profile {profile.name}",
            )
        )
        if board is not None:
            checks += _kernel_minimums(runtime, board, plan)
    return checks


def _kernel_minimums(runtime: Runtime, board: LoadedBoard, plan) -> list[Check]:
    if not plan.tree_on_host.joinpath("scripts/min-tool-version.sh").is_file():
        return [Check(True, f"{board.name}: kernel source not unpacked yet, minimum versions checked at build time")]
    return [
        Check(
            not verdict.too_old,
            f"{board.name}: {verdict.message()}",
            f"build with a newer profile (invoke build --board {board.name} --toolchain all tries each)",
        )
        for verdict, _ in check_tools(runtime, plan.tree_in(runtime), source.tree_version(plan.tree_on_host))
    ]


def doctor(settings: Settings, board: LoadedBoard | None = None) -> None:
    checks = run_checks(settings, board)
    for check in checks:
        print(check.line())
    failed = [check for check in checks if not check.ok]
    if failed:
        raise InfrastructureError(f"{len(failed)} of {len(checks)} checks failed")
