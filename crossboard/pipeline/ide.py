"""`invoke ide`: editor files for the board's out-of-tree modules, naming paths that exist on the host.

The kernel writes them itself (`make M=<module> rust-analyzer` and `compile_commands.json`) in the
toolchain image, where every path is the container's: the /crossboard/... folders and the image's Rust
library sources. crossboard copies those library sources out of the image once per image, into the
board's build folder, and rewrites every path to the host's: the module's own files to the module's
folder in the project (not the build's copy of it), so the editor opens what the user edits.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..artifacts.files import write_atomically
from ..artifacts.manifest import Manifest, finished_build
from ..board.load import LoadedBoard
from ..errors import StepFailed
from ..settings import Settings
from ..toolchain.stream import Tee
from . import source
from .context import BuildContext, BuildOptions
from .pipeline import build_folders, make_runtime
from .steps import module_work_dir

EDITOR_FILES = ("rust-project.json", "compile_commands.json")
RUST_LIBRARY = "lib/rustlib/src/rust/library"  # the standard library's sources, under rustc's sysroot


def write_editor_files(board: LoadedBoard, settings: Settings, echo: bool = True) -> list[Path]:
    """rust-project.json and compile_commands.json in each of the board's module folders."""
    folders = build_folders(board, settings)
    finished_build(folders["out"], board.name)  # the kernel and the modules' copies must be built
    runtime = make_runtime("docker", settings, board, folders, echo, prepare=True)
    manifest = Manifest(board=board.name, out_dir=folders["out"])
    ctx = BuildContext(
        board,
        settings,
        runtime,
        manifest,
        BuildOptions(echo=echo),
        source.plan_source(board.spec.kernel.source, settings.cache_dir, board.profile),
    )
    written = []
    with runtime, Tee(folders["out"] / "logs" / "ide.log", echo=False) as tee:
        sysroot_inside, sysroot_on_host = _sysroot_copy(ctx, tee)
        for module in board.module_dirs():
            on_host, inside = module_work_dir(ctx, module)
            if not on_host.is_dir():
                raise StepFailed(f"{module.name} has not been built for {board.name}: run invoke build --board {board.name}")
            for target in EDITOR_FILES:
                runtime.check(ctx.make(target, module_dir=inside), tee, what=f"make M={module.name} {target}")
            # the module's files first: its build copy stands for its folder in the project
            places = {inside: str(module)} | {runtime.path(name): str(path) for name, path in folders.items()}
            places[f"{sysroot_inside}/{RUST_LIBRARY}"] = f"{sysroot_on_host}/{RUST_LIBRARY}"
            for name in EDITOR_FILES:
                data = on_host_paths(json.loads((on_host / name).read_text()), places)
                if isinstance(data, dict) and data.get("sysroot") == sysroot_inside:
                    data["sysroot"] = str(sysroot_on_host)
                write_atomically(module / name, (json.dumps(data, indent=4) + "\n").encode())
                written.append(module / name)
    return written


def _sysroot_copy(ctx: BuildContext, tee: Tee) -> tuple[str, Path]:
    """The image's rustc sysroot, as far as editors read it (the standard library's sources), copied into
    the board's build folder once per image: (the sysroot as the container names it, the copy's host path)."""
    code, sysroot = ctx.runtime.output(["rustc", "--print", "sysroot"])
    if code != 0:
        raise StepFailed(f"rustc --print sysroot failed in the toolchain image: {sysroot.strip()}")
    image = (ctx.toolchain_identity or "host").removeprefix("sha256:")[:12]
    copy = f"ide/sysroot-{image}"
    inside = f"{ctx.runtime.path('build')}/{copy}"
    script = (
        f"test -d {inside}/{RUST_LIBRARY} || {{ rm -rf {inside}.partial && mkdir -p {inside}.partial/{RUST_LIBRARY} && "
        f"cp -rL {sysroot.strip()}/{RUST_LIBRARY}/. {inside}.partial/{RUST_LIBRARY}/ && mv {inside}.partial {inside}; }}"
    )
    ctx.runtime.check(["sh", "-c", script], tee, what="copying the Rust library sources out of the toolchain image")
    return sysroot.strip(), ctx.build_dir / copy


def on_host_paths(data, places: dict[str, str]):
    """`data` with every container path in its strings (whole or inside a command line) replaced by the
    host's; `places` maps container folders to host folders, the longest that fits winning."""
    prefixes = sorted(places, key=len, reverse=True)
    pattern = re.compile("|".join(f"{re.escape(prefix)}(?![\\w.-])" for prefix in prefixes))

    def rewrite(value):
        if isinstance(value, str):
            return pattern.sub(lambda match: places[match[0]], value)
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        if isinstance(value, dict):
            return {key: rewrite(item) for key, item in value.items()}
        return value

    return rewrite(data)
