"""`invoke ide`: editor files for the board's out-of-tree modules, naming paths that exist on the host.

rust-project.json: the kernel's own (`make rust-analyzer`, run in the toolchain image against the board's
build) lists the kernel's crates with the configuration's cfgs; each module is added to it as a crate
the way the kernel's script adds its in-tree samples (their dependencies and cfgs), plus the cfgs the
module's own build passed (from its .cmd file). The kernel's `make M=<module> rust-analyzer` would do
that itself, but with O= it fails in 6.12 (it looks for rust/Makefile in the module's folder).
compile_commands.json: `make M=<module> compile_commands.json`, for the module's C files.

Both name the container's paths: the /crossboard/... folders and the image's Rust library sources.
crossboard copies those sources out of the image once per image, into the board's build folder, and
rewrites every path to the host's: the module's files to its folder in the project (not the build's
copy), so the editor opens what the user edits.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..artifacts.files import write_atomically
from ..artifacts.manifest import Manifest, finished_build
from ..board.load import LoadedBoard
from ..errors import StepFailed, UserError
from ..locking import holding
from ..settings import Settings
from ..toolchain.stream import Tee
from .context import BuildContext, BuildOptions
from .pipeline import build_context, build_folders, make_runtime
from .steps import module_work_dir

RUST_LIBRARY = "lib/rustlib/src/rust/library"  # the standard library's sources, under rustc's sysroot
PROC_MACRO_SERVER = "libexec/rust-analyzer-proc-macro-srv"  # where rust-analyzer looks for it, likewise
MODEL_SAMPLE = "samples/rust/rust_minimal.rs"  # the in-tree sample whose crate entry each module's copies
CFG_FLAG = re.compile(r"--cfg[= ](\S+)")


def write_editor_files(board: LoadedBoard, settings: Settings, echo: bool = True) -> list[Path]:
    """rust-project.json and compile_commands.json in each of the board's module folders."""
    if board.devel_bundle():
        raise UserError(
            f"invoke ide: {board.name} builds against a devel bundle (kernel.source.devel), which holds the kernel "
            "crates' metadata but not their sources: run invoke ide on the board that built the kernel"
        )
    # the sysroot copy where no build can write: the proc-macro server in it runs on this machine
    folders = build_folders(board, settings) | {"editor": settings.cache_dir / "editor"}
    finished_build(folders["out"], board.name)  # the kernel and the modules' copies must be built
    runtime = make_runtime("docker", settings, board, folders, echo, prepare=True)
    ctx = build_context(board, settings, runtime, Manifest(board=board.name, out_dir=folders["out"]), BuildOptions(echo=echo))
    written = []
    # the locks a build takes on these folders, in its order: make runs in the shared kernel build folder
    with (
        holding(folders["work"], f"this clone's work folder of {board.name}"),
        holding(folders["build"], f"the kernel build folder of {board.name}"),
        runtime,
        Tee(folders["out"] / "logs" / "ide.log", echo=False) as tee,
    ):
        sysroot_inside, sysroot_on_host = _sysroot_copy(ctx, tee)
        runtime.check(ctx.make("rust-analyzer"), tee, what="make rust-analyzer")
        kernel_project = json.loads((ctx.kernel_dir_on_host / "rust-project.json").read_text())
        for module in board.module_dirs():
            on_host, inside = module_work_dir(ctx, module)
            if not on_host.is_dir():
                raise StepFailed(f"{module.name} has not been built for {board.name}: run invoke build --board {board.name}")
            runtime.check(
                ctx.make("compile_commands.json", module_dir=inside), tee, what=f"make M={module.name} compile_commands.json"
            )
            files = {
                "rust-project.json": with_module(kernel_project, ctx.source_tree, on_host, inside),
                "compile_commands.json": json.loads((on_host / "compile_commands.json").read_text()),
            }
            # the module's files first: its build copy stands for its folder in the project
            places = {inside: str(module)} | {runtime.path(name): str(path) for name, path in folders.items()}
            places[f"{sysroot_inside}/{RUST_LIBRARY}"] = f"{sysroot_on_host}/{RUST_LIBRARY}"
            for name, data in files.items():
                data = on_host_paths(data, places)
                if isinstance(data, dict) and data.get("sysroot") == sysroot_inside:
                    data["sysroot"] = str(sysroot_on_host)
                write_atomically(module / name, (json.dumps(data, indent=4) + "\n").encode())
                written.append(module / name)
    return written


def with_module(kernel_project: dict, tree: str, module_on_host: Path, module_inside: str) -> dict:
    """The kernel's rust-project.json with the module's crates added as its only workspace members:
    each a copy of the model sample's entry (its dependencies on core, kernel, ... and the kernel's
    cfgs), rooted at the module's file, with the cfgs its build passed besides."""
    crates = [dict(crate, is_workspace_member=False) for crate in kernel_project["crates"]]
    model = next((crate for crate in crates if crate["root_module"] == f"{tree}/{MODEL_SAMPLE}"), None)
    if model is None:
        raise StepFailed(f"the kernel's rust-project.json has no {MODEL_SAMPLE} to model a module's crate on")
    kbuild = (module_on_host / "Kbuild").read_text() if (module_on_host / "Kbuild").is_file() else ""
    for root in sorted(module_on_host.glob("*.rs")):
        if f"{root.stem}.o" not in kbuild:
            continue
        command = module_on_host / f".{root.stem}.o.cmd"
        built_with = CFG_FLAG.findall(command.read_text()) if command.is_file() else []
        cfgs = model["cfg"] + [cfg for cfg in dict.fromkeys(built_with) if cfg not in model["cfg"]]
        crates.append(
            dict(model, display_name=root.stem, root_module=f"{module_inside}/{root.name}", cfg=cfgs, is_workspace_member=True)
        )
    return dict(kernel_project, crates=crates)


def _sysroot_copy(ctx: BuildContext, tee: Tee) -> tuple[str, Path]:
    """The image's rustc sysroot as far as editors read it, copied once per image into a folder that only
    this copy writes (build containers never mount it: the editor runs its proc-macro server here): the
    standard library's sources, and rust-analyzer's proc-macro server of this very rustc (Debian's rustc
    ships it), which can expand the kernel's `macros` crate that rustc built.
    Returns the sysroot as the container names it, and the copy's host path."""
    code, sysroot = ctx.runtime.output(["rustc", "--print", "sysroot"])
    if code != 0:
        raise StepFailed(f"rustc --print sysroot failed in the toolchain image: {sysroot.strip()}")
    sysroot = sysroot.strip()
    image = ctx.runtime.toolchain().get("id", "host").removeprefix("sha256:")[:12]
    copy = f"sysroot-{image}"
    inside, partial = f"{ctx.runtime.path('editor')}/{copy}", f"{ctx.runtime.path('editor')}/{copy}.partial"
    script = (
        f"test -d {inside} && exit 0; rm -rf {partial} && mkdir -p {partial}/{RUST_LIBRARY} {partial}/libexec && "
        f"cp -rL {sysroot}/{RUST_LIBRARY}/. {partial}/{RUST_LIBRARY}/ && "
        f"{{ ! test -e {sysroot}/{PROC_MACRO_SERVER} || cp -L {sysroot}/{PROC_MACRO_SERVER} {partial}/libexec/; }} && "
        f"mv {partial} {inside}"
    )
    with ctx.runtime.widened(writable=frozenset({"editor"})) as copier:
        copier.check(["sh", "-c", script], tee, what="copying the Rust library sources out of the toolchain image")
    return sysroot, ctx.settings.cache_dir / "editor" / copy


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
