"""The build steps, in order. Each says what it would run (`plan`) and runs it (`run`); both use the
same command builders, so `--dry-run` shows exactly what a build does. Each also says what it reads
(`inputs`): a step whose inputs are as when it last succeeded, and whose products are still there,
is not run again (see stamps.py)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import kconfig
from ..artifacts.files import build_id_of_elf, highest_glibc, pack_tree, sha256_of, write_atomically
from ..artifacts.manifest import MANIFEST_FORMAT
from ..errors import StepFailed, UserError
from ..toolchain.runtime import HostRuntime, Runtime
from ..versions import dotted
from . import cargo, devel, source, stamps
from .context import REPRODUCIBLE_ENV, BuildContext
from .toolcheck import CHECKED_TOOLS, check_tools, tool_lines

GENERATED_FRAGMENT = "crossboard-board.config"


def _always(ctx: BuildContext) -> str | None:
    return None


def _nothing_to_check(ctx: BuildContext, record: dict) -> bool:
    return True


@dataclass(frozen=True)
class Step:
    name: str
    plan: Callable[[BuildContext], list[str]]
    run: Callable[[BuildContext], str]  # returns a note for the manifest ("" when nothing to say)
    # A hash of everything the step reads, or None when in doubt (the step then always runs).
    inputs: Callable[[BuildContext], str | None] = _always
    # Whether what the step made, as its stamp recorded it, is still there to be reused.
    still_there: Callable[[BuildContext, dict], bool] = _nothing_to_check
    # Whether it builds the kernel: such steps do not run against a devel bundle (a kernel built elsewhere).
    builds_kernel: bool = False
    # What it downloads or unpacks before `run`, the only part with the network or the right to write the
    # kernel sources, which runs no build code; returns a note, as `run` does.
    fetch: Callable[[BuildContext], str] | None = None


# -- source --------------------------------------------------------------------------------------


def _source_plan(ctx: BuildContext) -> list[str]:
    return source.describe(ctx.board.spec.kernel.source, ctx.source_plan)


def _source_fetch(ctx: BuildContext) -> str:
    with ctx.tee("source") as tee:
        unpacked = source.obtain(ctx.board.spec.kernel.source, ctx.source_plan, ctx.runtime, tee)
    return "unpacked" if unpacked else "already unpacked"


def _source_run(ctx: BuildContext) -> str:
    if not ctx.source_plan.unpacked:
        raise StepFailed(f"no kernel tree at {ctx.source_plan.tree_on_host}: the fetch before the build did not unpack it")
    return ""


# -- toolchain check -----------------------------------------------------------------------------


def _toolcheck_plan(ctx: BuildContext) -> list[str]:
    if ctx.from_bundle:
        asked = "; ".join(" ".join(argv) for argv in CHECKED_TOOLS.values())
        return [f"{asked}: compared with the tools {devel.INFO_NAME} names (rustc must be the same)"]
    return [
        f"sh {ctx.source_tree}/scripts/min-tool-version.sh {tool}; {' '.join(argv)}" for tool, argv in CHECKED_TOOLS.items()
    ] + [ctx.show(ctx.make("rustavailable"))]


def _toolcheck_inputs(ctx: BuildContext) -> str | None:
    tree = ctx.tree_identity or str(ctx.source_plan.tree_on_host)
    return ctx.toolchain_identity and stamps.digest(ctx.toolchain_identity, tree, str(ctx.options.strict_toolchain))


def _toolcheck_run(ctx: BuildContext) -> str:
    if ctx.from_bundle:
        return _check_bundle_tools(ctx)
    notes = []
    tree_version = source.tree_version(ctx.source_plan.tree_on_host)
    for verdict, version_line in check_tools(ctx.runtime, ctx.source_tree, tree_version):
        ctx.manifest.tools[verdict.tool] = version_line
        if verdict.too_old or (verdict.newer and ctx.options.strict_toolchain):
            raise StepFailed(verdict.message() + ("" if verdict.too_old else " (--strict-toolchain)"))
        if verdict.worth_a_warning:
            print(f"crossboard: warning: {verdict.message()}", flush=True)
        notes.append(f"{verdict.tool} {dotted(verdict.found or ())} >= {dotted(verdict.minimum)}")
    with ctx.tee("toolchain-check") as tee:
        if ctx.runtime.run(ctx.make("rustavailable"), tee) != 0:
            last = tee.tail.decode(errors="replace").strip().splitlines()[-1:]
            raise StepFailed(f"`make LLVM=1 rustavailable` says Rust is not available with this toolchain: {last}")
    return "; ".join(notes)


def _check_bundle_tools(ctx: BuildContext) -> str:
    """A devel bundle's kernel names the tools that built it; rustc must be the same one."""
    info = devel.read_info(ctx.kernel_dir_on_host, str(ctx.source_plan.bundle))
    found = tool_lines(ctx.runtime)
    ctx.manifest.tools.update(found)
    differences = devel.tool_differences(info, found)
    for difference in differences:
        refused = devel.refusal(difference, info, ctx.board.spec.toolchain)
        if refused:
            raise UserError(refused)
        if ctx.options.echo:
            print(
                f"crossboard: warning: the bundle's kernel was built with {difference.bundle}; here: {difference.here}",
                flush=True,
            )
    return f"{found['rustc']}, as the bundle's kernel {info.kernel_release} from {info.board}"


# -- configure -----------------------------------------------------------------------------------


def _generated_fragment(ctx: BuildContext) -> str:
    """The board's own settings as Kconfig lines, merged after its fragments."""
    return f'CONFIG_LOCALVERSION="{ctx.board.spec.kernel.localversion}"\n# CONFIG_LOCALVERSION_AUTO is not set\n'


def _fragment_files(ctx: BuildContext) -> list[tuple[str, str]]:
    """(name inside the build folder, content) of every fragment, the board's generated one last."""
    files = [(f"fragments/{i}-{p.name}", p.read_text()) for i, p in enumerate(ctx.board.fragment_paths())]
    return files + [(f"fragments/{len(files)}-{GENERATED_FRAGMENT}", _generated_fragment(ctx))]


BASE_CONFIG = "fragments/base.config"


def _configure_inputs(ctx: BuildContext) -> str | None:
    """The tree (a local tree by its path), the toolchain (Kconfig asks the compilers what they can do),
    the base config and every fragment."""
    base_file = ctx.board.base_config_file()
    return ctx.toolchain_identity and stamps.digest(
        ctx.toolchain_identity,
        ctx.tree_identity or str(ctx.source_plan.tree_on_host),
        ctx.board.config_base,
        base_file.read_bytes() if base_file else b"",
        *[part for name, content in _fragment_files(ctx) for part in (name, content)],
    )


def _configure_commands(ctx: BuildContext) -> list[tuple[str, list[str]]]:
    """(what, argv) of each configure command."""
    base = ctx.board.config_base
    fragments = [f"{ctx.kernel_dir}/{name}" for name, _ in _fragment_files(ctx)]
    # A full config file (e.g. pulled from a board) is merge_config's starting point; a make target makes one.
    from_file = ctx.board.base_config_file() is not None
    start = f"{ctx.kernel_dir}/{BASE_CONFIG}" if from_file else f"{ctx.kernel_dir}/.config"
    merge = (
        "merge_config.sh",
        ["sh", f"{ctx.source_tree}/scripts/kconfig/merge_config.sh", "-m", "-O", ctx.kernel_dir, start, *fragments],
    )
    olddefconfig = ("make olddefconfig", ctx.make("olddefconfig"))  # always with LLVM=1: else Kconfig hides RUST
    return [merge, olddefconfig] if from_file else [(f"make {base}", ctx.make(base)), merge, olddefconfig]


def _configure_plan(ctx: BuildContext) -> list[str]:
    return [ctx.show(argv) for _, argv in _configure_commands(ctx)] + [
        "check that every symbol the fragments request has that value in .config"
    ]


def _configure_run(ctx: BuildContext) -> str:
    for name, content in _fragment_files(ctx):
        write_atomically(ctx.kernel_dir_on_host / name, content.encode())
    base_file = ctx.board.base_config_file()
    if base_file is not None:
        write_atomically(ctx.kernel_dir_on_host / BASE_CONFIG, base_file.read_bytes())
    with ctx.tee("configure") as tee:
        for what, argv in _configure_commands(ctx):
            ctx.runtime.check(argv, tee, what=what)
    _verify_config(ctx, ctx.kernel_dir_on_host / ".config")
    return "configured"


def _config_still_there(ctx: BuildContext, record: dict) -> bool:
    config = ctx.kernel_dir_on_host / ".config"
    return config.is_file() and sha256_of(config) == record["manifest"].get("config_sha256")


def _verify_config(ctx: BuildContext, config: Path) -> None:
    requested: dict[str, str] = {}
    for _, content in _fragment_files(ctx):
        requested.update(kconfig.parse(content))
    final = kconfig.read(config)
    problems = kconfig.unmet(requested, final)
    if problems:
        raise UserError(f"{ctx.board.file.name}: kernel.config: {kconfig.describe_unmet(problems, final)}")
    ctx.manifest.config_sha256 = sha256_of(config)


# -- device trees and kernel ---------------------------------------------------------------------


def _kernel_tree_inputs(ctx: BuildContext, *more: str) -> str | None:
    """What every make in the kernel tree reads: the tree, the toolchain and the final .config.
    A local tree is always in doubt: make decides."""
    config = ctx.kernel_dir_on_host / ".config"
    if not (ctx.tree_identity and ctx.toolchain_identity and config.is_file()):
        return None
    return stamps.digest(ctx.tree_identity, ctx.toolchain_identity, config.read_bytes(), *more)


def _dtbs_inputs(ctx: BuildContext) -> str | None:
    return _kernel_tree_inputs(ctx, "dtbs", *ctx.board.spec.kernel.dtbs)


def _dtbs_still_there(ctx: BuildContext, record: dict) -> bool:
    return all((ctx.kernel_dir_on_host / "arch/arm64/boot/dts" / dtb).is_file() for dtb in ctx.board.spec.kernel.dtbs)


def _dtbs_plan(ctx: BuildContext) -> list[str]:
    dtbs = ctx.board.spec.kernel.dtbs
    return [ctx.show(ctx.make(*dtbs))] if dtbs else ["no DTBs for this board"]


def _dtbs_run(ctx: BuildContext) -> str:
    dtbs = ctx.board.spec.kernel.dtbs
    if not dtbs:
        return "no DTBs for this board"
    with ctx.counted_tee("dtbs") as tee:
        ctx.runtime.check(ctx.make(*dtbs), tee, what="building the DTBs", env=REPRODUCIBLE_ENV)
    return ", ".join(dtbs)


def _install_modules_argv(ctx: BuildContext) -> list[str]:
    return ctx.make(f"INSTALL_MOD_PATH={ctx.runtime.path('build')}/staging", "modules_install")


def _kernel_plan(ctx: BuildContext) -> list[str]:
    env = " ".join(f"{k}='{v}'" for k, v in REPRODUCIBLE_ENV.items())
    return [f"{env} {ctx.show(ctx.make(ctx.board.spec.kernel.image, 'modules'))}", ctx.show(_install_modules_argv(ctx))]


def _kernel_inputs(ctx: BuildContext) -> str | None:
    return _kernel_tree_inputs(ctx, "kernel", ctx.board.spec.kernel.image, *REPRODUCIBLE_ENV.values())


def _kernel_still_there(ctx: BuildContext, record: dict) -> bool:
    release = record["manifest"].get("kernel_release", "")
    return bool(release) and all(
        path.exists()
        for path in (
            ctx.kernel_dir_on_host / "arch/arm64/boot" / ctx.board.spec.kernel.image,
            ctx.kernel_dir_on_host / "Module.symvers",
            ctx.build_dir / "staging/lib/modules" / release,
        )
    )


def _kernel_run(ctx: BuildContext) -> str:
    with ctx.counted_tee("kernel") as tee:
        ctx.runtime.check(ctx.make(ctx.board.spec.kernel.image, "modules"), tee, what="the kernel build", env=REPRODUCIBLE_ENV)
        shutil.rmtree(ctx.build_dir / "staging", ignore_errors=True)
        ctx.runtime.check(_install_modules_argv(ctx), tee, what="modules_install", env=REPRODUCIBLE_ENV)
    ctx.manifest.kernel_release = (ctx.kernel_dir_on_host / "include/config/kernel.release").read_text().strip()
    return ctx.manifest.kernel_release


# -- devel bundle --------------------------------------------------------------------------------


def devel_bundle_file(ctx: BuildContext, release: str) -> Path:
    return ctx.build_dir / "devel" / f"{devel.bundle_name(release)}.tar.gz"


def _devel_plan(ctx: BuildContext) -> list[str]:
    return [
        f"collect {devel.describe_command()} from {ctx.kernel_dir} into a {devel.bundle_name('<release>')} folder",
        f"write {devel.INFO_NAME} (the kernel's release and build ID, the tools that built it); "
        f"pack it as {ctx.runtime.path('build')}/devel/{devel.bundle_name('<release>')}.tar.gz",
    ]


def _devel_inputs(ctx: BuildContext) -> str | None:
    return _kernel_tree_inputs(ctx, "devel", str(devel.BUNDLE_FORMAT))


def _devel_still_there(ctx: BuildContext, record: dict) -> bool:
    release = ctx.manifest.kernel_release  # the kernel step's, run or reused before this one
    return bool(release) and devel_bundle_file(ctx, release).is_file()


def _devel_run(ctx: BuildContext) -> str:
    release = (ctx.kernel_dir_on_host / "include/config/kernel.release").read_text().strip()
    folder = ctx.build_dir / "devel"
    partial = folder / f".partial-{devel.bundle_name(release)}"
    shutil.rmtree(folder, ignore_errors=True)  # one bundle: the kernel's current one
    folder.mkdir(parents=True)
    inside = f"{ctx.runtime.path('build')}/devel/{partial.name}"
    try:
        with ctx.tee("devel") as tee:
            assemble = devel.assemble_command(ctx.source_tree, ctx.kernel_dir, inside)
            ctx.runtime.check(assemble, tee, what="collecting the devel bundle")
        builds_on = partial / ".builds-on"
        info = devel.BundleInfo(
            board=ctx.board.name,
            toolchain=ctx.board.spec.toolchain,
            image=ctx.manifest.image.get("ref", ""),
            kernel_release=release,
            kernel_build_id=build_id_of_elf(ctx.kernel_dir_on_host / "vmlinux"),
            tools=dict(ctx.manifest.tools),  # what toolchain-check found
            builds_on=builds_on.read_text().strip(),
        )
        builds_on.unlink()
        write_atomically(partial / devel.INFO_NAME, info.text().encode())
        pack_tree(partial, devel.bundle_name(release), devel_bundle_file(ctx, release))
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    size = devel_bundle_file(ctx, release).stat().st_size
    return f"{devel.bundle_name(release)}.tar.gz, {size / 2**20:.1f} MiB"


# -- out-of-tree modules -------------------------------------------------------------------------


def module_work_dir(ctx: BuildContext, module: Path) -> tuple[Path, str]:
    """Where a module is built: a copy in the project's work folder (Kbuild writes objects beside the
    sources and 6.12 has no MO=), on the host and as the runtime sees it."""
    return ctx.work_dir / "modules" / module.name, f"{ctx.runtime.path('work')}/modules/{module.name}"


def module_inputs(ctx: BuildContext, module: Path) -> str | None:
    """The kernel it is built against, and its own files."""
    kernel = _kernel_inputs(ctx)
    return kernel and stamps.digest(kernel, stamps.folder_digest(module))


def check_modules_buildable(ctx: BuildContext) -> None:
    missing = [name for name in ("Module.symvers", "rust/libkernel.rmeta") if not (ctx.kernel_dir_on_host / name).is_file()]
    if missing:
        raise StepFailed(
            f"the kernel tree in {ctx.kernel_dir_on_host} is not fully built (no {', '.join(missing)}): "
            "out-of-tree modules need a complete kernel build first; run `invoke build` "
            "without --only, or with --only kernel"
        )


def _sync_sources(source_dir: Path, work_dir: Path) -> None:
    """Copy changed files only, so an untouched module stays up to date for make."""
    work_dir.mkdir(parents=True, exist_ok=True)
    for file in source_dir.rglob("*"):
        target = work_dir / file.relative_to(source_dir)
        if stamps.NOT_INPUTS & set(file.relative_to(source_dir).parts):
            continue
        if file.is_dir():
            target.mkdir(exist_ok=True)
        elif not target.is_file() or target.read_bytes() != file.read_bytes():
            shutil.copy2(file, target)


def _modules_plan(ctx: BuildContext) -> list[str]:
    lines = []
    for module in ctx.board.module_dirs():
        _, inside = module_work_dir(ctx, module)
        lines += [f"copy {module} to {inside}", ctx.show(ctx.make("modules", module_dir=inside))]
    return lines


def _modules_run(ctx: BuildContext) -> str:
    """Each module whose files or kernel changed is built again; the others are not touched."""
    if not ctx.board.module_dirs():
        return "no out-of-tree modules"
    built, unchanged = [], []
    with ctx.tee("modules") as tee:
        for module in ctx.board.module_dirs():
            on_host, inside = module_work_dir(ctx, module)
            stamp, inputs = ctx.stamp(f"module-{module.name}"), module_inputs(ctx, module)
            if stamps.current(stamp, inputs) and any(on_host.glob("*.ko")):
                unchanged.append(module.name)
                continue
            stamps.forget(stamp)
            check_modules_buildable(ctx)
            _sync_sources(module, on_host)
            ctx.runtime.check(ctx.make("modules", module_dir=inside), tee, what=f"building module {module.name}")
            stamps.remember(stamp, inputs)
            built += [ko.name for ko in on_host.glob("*.ko")]
    return ", ".join(
        filter(
            None,
            [f"built {', '.join(sorted(built))}" if built else "", f"unchanged: {', '.join(unchanged)}" if unchanged else ""],
        )
    )


# -- userspace apps ------------------------------------------------------------------------------


APP_BUILDERS = ("auto", "cross", "cargo")


# A rustup in front of the host's for cross (see that script): cross then neither updates the host's
# toolchain nor fetches a target's std, and builds offline.
CROSS_PATH = Path(__file__).with_name("cross-path")
CARGO_HOME = "cargo-home"  # in the work folder: the apps' crates, fetched once, built from offline


def app_builder(wanted: str, runtime_name: str) -> str:
    """`cross` where it is installed (with the host's rustup, which it insists on) and the runtime is
    docker (cross starts our image itself), else `cargo` in the runtime; `--app-builder` chooses."""
    if wanted not in APP_BUILDERS:
        raise UserError(f"--app-builder: unknown builder {wanted!r} (builders: {', '.join(APP_BUILDERS)})")
    missing = [tool for tool in ("cross", "rustup") if shutil.which(tool) is None]
    cross_usable = runtime_name == "docker" and not missing
    if wanted == "cross" and not cross_usable:
        raise UserError(
            "--app-builder cross: "
            + (
                f"{' and '.join(missing)} not installed (scripts/install-deps installs cross where cargo and rustup are)"
                if missing
                else "cross needs --runtime docker"
            )
        )
    if wanted == "auto":
        return "cross" if cross_usable else "cargo"
    return wanted


def _apps_inputs(ctx: BuildContext) -> str | None:
    """Each app's own files, the builder, target and toolchain. An app that reads files outside its
    folder (a path dependency, a workspace above it) is in doubt: cargo decides."""
    if not ctx.toolchain_identity:
        return None
    parts = [ctx.toolchain_identity, app_builder(ctx.options.app_builder, ctx.runtime.name), ctx.board.spec.targets.rust]
    for app, app_dir in zip(ctx.board.spec.apps, ctx.board.app_dirs(), strict=True):
        manifest = tomllib.loads((app_dir / "Cargo.toml").read_text())
        above = _folders_above(app_dir, ctx.board.project_root)
        if _has_path_dependency(manifest) or any((parent / "Cargo.toml").is_file() for parent in above):
            return None
        parts += [str(app_dir.relative_to(ctx.board.project_root)), app.model_dump_json(), stamps.folder_digest(app_dir)]
    return stamps.digest(*parts)


def _folders_above(app_dir: Path, project_root: Path) -> list[Path]:
    """The folders between an app's and the project's root, the root included: where a workspace of it is."""
    return list(app_dir.parents[: len(app_dir.relative_to(project_root).parts)])


def _lock_of(app_dir: Path, project_root: Path) -> Path | None:
    """The Cargo.lock cargo uses for the app: its own, or its workspace's above it in the project."""
    for folder in [app_dir, *_folders_above(app_dir, project_root)]:
        if (folder / "Cargo.lock").is_file():
            return folder / "Cargo.lock"
    return None


def _has_path_dependency(manifest: dict) -> bool:
    tables = [manifest] + list(manifest.get("target", {}).values())
    return any(
        isinstance(spec, dict) and "path" in spec
        for table in tables
        for kind in ("dependencies", "dev-dependencies", "build-dependencies")
        for spec in table.get(kind, {}).values()
    )


def app_binary(ctx: BuildContext, name: str) -> tuple[Path, str]:
    """Where cargo leaves a binary, on the host and as the runtime sees it."""
    relative = f"apps/{ctx.board.spec.targets.rust}/release/{name}"
    return ctx.work_dir / relative, f"{ctx.runtime.path('work')}/{relative}"


def _apps_still_there(ctx: BuildContext, record: dict) -> bool:
    made = record["manifest"].get("app_binaries", {})
    return len(made) == len(ctx.board.spec.apps) and all(
        app_binary(ctx, name)[0].is_file() for app in made.values() for name in app["binaries"]
    )


def _app_command(ctx: BuildContext, index: int, builder: str) -> tuple[Runtime, list[str], dict[str, str], str | None]:
    """(where it runs, argv, environment, working folder) of one app's build. Both builders compile with
    the image's cargo and rustc: cross mounts the host's rustup toolchain at /rust but puts it last on PATH."""
    app, app_dir = ctx.board.spec.apps[index], ctx.board.app_dirs()[index]
    target = ctx.board.spec.targets.rust
    flags = cargo.build_flags(app, has_lock=(app_dir / "Cargo.lock").is_file())
    env = {"RUSTFLAGS": "-C target-feature=+crt-static"} if app.static else {}
    if builder == "cross":
        # cross maps --target-dir into its container, not --manifest-path: it runs in the app's folder
        env[f"CROSS_TARGET_{target.upper().replace('-', '_')}_IMAGE"] = ctx.manifest.image["ref"]
        env.update(
            {
                "CROSS_CUSTOM_TOOLCHAIN": "1",
                "CROSSBOARD_REAL_RUSTUP": shutil.which("rustup") or "rustup",
                "PATH": f"{CROSS_PATH}{os.pathsep}{os.environ.get('PATH', '')}",
                # cross mounts these read-write: crossboard's own, never the user's ~/.cargo and ~/.xargo
                "CARGO_HOME": str(ctx.work_dir / CARGO_HOME),
                "XARGO_HOME": str(ctx.work_dir / "xargo-home"),
                # placed before cross's own options, which it cannot change; the crates are fetched before
                "CROSS_CONTAINER_OPTS": "--network none --cap-drop ALL --security-opt no-new-privileges",
            }
        )
        argv = ["cross", "build", "--release", "--target", target, "--target-dir", str(ctx.work_dir / "apps"), *flags]
        return HostRuntime(ctx.runtime.folders), argv, env, str(app_dir)
    project_dir = app_dir.relative_to(ctx.board.project_root)
    argv = [
        "cargo",
        "build",
        "--release",
        "--target",
        target,
        "--manifest-path",
        f"{ctx.runtime.path('project')}/{project_dir}/Cargo.toml",
        "--target-dir",
        f"{ctx.runtime.path('work')}/apps",
        *flags,
    ]
    env["CARGO_HOME"] = f"{ctx.runtime.path('work')}/{CARGO_HOME}"
    # in the app's folder, as cross runs: cargo reads the app's own .cargo/config.toml from where it runs
    return ctx.runtime, argv, env, f"{ctx.runtime.path('project')}/{project_dir}"


def _apps_plan(ctx: BuildContext) -> list[str]:
    lines = []
    builder = app_builder(ctx.options.app_builder, ctx.runtime.name)
    for index in range(len(ctx.board.spec.apps)):
        runner, argv, env, cwd = _app_command(ctx, index, builder)
        where = f"on the host in {cwd}: " if isinstance(runner, HostRuntime) else f"in {cwd}: "
        path = [f"PATH={CROSS_PATH}:$PATH"] if "PATH" in env else []
        shown = " ".join(path + [f"{key}={shlex.quote(value)}" for key, value in env.items() if key != "PATH"]) + " "
        # fetched with the network, then built without
        lines.append(where + shown + ctx.show(cargo.fetch_argv(argv)))
        lines.append(where + shown + ctx.show([*argv, "--offline"]))
    return lines


def _apps_fetch(ctx: BuildContext) -> str:
    """The crates of each app, fetched with the network into the work folder's cargo home (cargo fetch
    runs no build script), for a build without it. A cargo configuration a build script of an earlier
    build left in that home is removed first: the fetch would run what it names, with the network."""
    builder = app_builder(ctx.options.app_builder, ctx.runtime.name)
    cargo.remove_configuration(ctx.work_dir / CARGO_HOME)
    with ctx.tee("apps") as tee:
        for index, app_dir in enumerate(ctx.board.app_dirs()):
            runner, argv, env, cwd = _app_command(ctx, index, builder)
            # cargo writes the Cargo.lock an app lacks, as it does for its author: then the project is writable
            project = frozenset() if _lock_of(app_dir, ctx.board.project_root) else frozenset({"project"})
            if project and isinstance(ctx.runtime, HostRuntime) and not os.access(app_dir, os.W_OK):
                raise UserError(
                    f"apps[{index}] {ctx.board.spec.apps[index].path}: no Cargo.lock, and the project cannot be written "
                    "here (a build on a remote engine): run cargo generate-lockfile in it and build again"
                )
            with runner.widened(writable=project, network=True) as fetching:
                fetching.check(cargo.fetch_argv(argv), tee, what=f"fetching the crates of app {app_dir.name}", env=env, cwd=cwd)
    return ""


def _apps_run(ctx: BuildContext) -> str:
    builder = app_builder(ctx.options.app_builder, ctx.runtime.name)
    built, compilers = [], set()
    ctx.manifest.app_binaries, ctx.manifest.app_glibc = {}, {}
    with ctx.tee("apps") as tee:
        for index, (app, app_dir) in enumerate(zip(ctx.board.spec.apps, ctx.board.app_dirs(), strict=True)):
            package = cargo.package_of(app, index, app_dir)
            runner, argv, env, cwd = _app_command(ctx, index, builder)
            messages = cargo.CargoMessages(tee)
            what = f"building app {app_dir.name} with {builder}"
            runner.check([*argv, "--offline"], messages, what=what, env=env, cwd=cwd)  # crates from _apps_fetch
            binaries, run = cargo.chosen_binaries(app, index, messages.executables(), package["default-run"])
            taken = [name for name in binaries if name in ctx.manifest.app_glibc]
            if taken:
                raise UserError(f"apps[{index}] {app.path}: another app of {ctx.board.name} makes a binary {taken[0]} too")
            for name in binaries:
                compilers.update(_check_glibc(ctx, index, name))
            ctx.manifest.app_binaries[app.path] = {"binaries": binaries, "run": run}
            built.append(", ".join(binaries))
    how = (
        f"cross on the host with the image {ctx.manifest.image.get('ref')}"
        if builder == "cross"
        else f"cargo in the {ctx.runtime.name} runtime"
    )
    ctx.manifest.app_builder = f"{how}, linker aarch64-linux-gnu-gcc" + (f", {', '.join(sorted(compilers))}" if compilers else "")
    return f"{', '.join(built)} (with {builder})"


def _check_glibc(ctx: BuildContext, index: int, name: str) -> set[str]:
    """The binary's highest GLIBC_x.y into the manifest, refused above the board's; the compilers it names."""
    code, versions = ctx.runtime.output(["llvm-readelf", "-V", "-p", ".comment", app_binary(ctx, name)[1]])
    needed = highest_glibc(versions) if code == 0 else None
    ctx.manifest.app_glibc[name] = dotted(needed) if needed else ""
    board_glibc = tuple(int(p) for p in ctx.board.spec.targets.glibc.split("."))
    if needed and needed > board_glibc:
        raise StepFailed(
            f"apps[{index}] {name} needs GLIBC_{dotted(needed)} but {ctx.board.name} has glibc "
            f"{ctx.board.spec.targets.glibc} (targets.glibc): set `static: true` for the app "
            "(+crt-static) or build it for musl"
        )
    return set(re.findall(r"rustc version [^ ]+", versions))


# -- collect -------------------------------------------------------------------------------------


def _collect_plan(ctx: BuildContext) -> list[str]:
    if ctx.from_bundle:
        return [f"copy the bundle's .config, the modules and apps into {ctx.out_dir}; record them in {ctx.manifest.path}"]
    return [
        f"copy Image, DTBs, modules, apps and the devel bundle into {ctx.out_dir}; pack the modules tree; "
        f"record sizes, sha256 and vermagic in {ctx.manifest.path}"
    ]


def _publish(source_file: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copy2(source_file, partial)
    partial.replace(target)
    return target


def _collect_inputs(ctx: BuildContext) -> str | None:
    """What every other step made: when all of it is as before, so is what collect would copy."""
    made = [_kernel_inputs(ctx), _dtbs_inputs(ctx), _devel_inputs(ctx), _apps_inputs(ctx)]
    made += [module_inputs(ctx, module) for module in ctx.board.module_dirs()]
    known = [part for part in made if part is not None]
    if len(known) < len(made):
        return None
    spec = ctx.board.spec.kernel
    pulled = kconfig.pulled_build_id(ctx.board.base_config_file())
    return stamps.digest(*known, spec.image, *spec.dtbs, *spec.samples, ctx.manifest.config_sha256, pulled, str(MANIFEST_FORMAT))


def _artifacts_still_there(ctx: BuildContext, record: dict) -> bool:
    """Every file collect published is in out/ as it was: a deleted or edited one is copied again."""
    artifacts = record["manifest"].get("artifacts", [])
    return bool(artifacts) and all(
        (ctx.out_dir / a["path"]).is_file() and sha256_of(ctx.out_dir / a["path"]) == a["sha256"] for a in artifacts
    )


def _collect_run(ctx: BuildContext) -> str:
    spec, kernel, out = ctx.board.spec, ctx.kernel_dir_on_host, ctx.out_dir
    release = ctx.manifest.kernel_release or (kernel / "include/config/kernel.release").read_text().strip()
    ctx.manifest.kernel_release = release
    ctx.manifest.pulled_build_id = kconfig.pulled_build_id(ctx.board.base_config_file())
    ctx.manifest.artifacts = []
    bundle = ctx.source_plan.bundle
    if bundle is not None:
        info = devel.read_info(kernel, str(bundle))
        ctx.manifest.kernel_build_id = info.kernel_build_id
        ctx.manifest.config_sha256 = sha256_of(kernel / ".config")
        ctx.manifest.devel_bundle = {
            "path": str(bundle),
            "sha256": source.sha256_once(bundle),
            "board": info.board,
            "toolchain": info.toolchain,
        }
    else:
        ctx.manifest.kernel_build_id = build_id_of_elf(kernel / "vmlinux")
        _collect_kernel(ctx, release)
    ctx.manifest.add_artifact(_publish(kernel / ".config", out / "config"), "config")
    for module in ctx.board.module_dirs():
        for built in sorted(module_work_dir(ctx, module)[0].glob("*.ko")):
            ctx.manifest.add_artifact(_publish(built, out / "modules" / built.name), "module")
    for app in spec.apps:
        for name in ctx.manifest.app_binaries[app.path]["binaries"]:
            ctx.manifest.add_artifact(_publish(app_binary(ctx, name)[0], out / "apps" / name), "app", source=app.path)
    return f"{len(ctx.manifest.artifacts)} artifacts" + (" (the kernel is the devel bundle's)" if bundle else "")


def _collect_kernel(ctx: BuildContext, release: str) -> None:
    """What only a build of the kernel has: the image, DTBs, in-tree samples, the modules tree, the devel bundle."""
    spec, kernel, out = ctx.board.spec, ctx.kernel_dir_on_host, ctx.out_dir
    ctx.manifest.add_artifact(_publish(kernel / "arch/arm64/boot" / spec.kernel.image, out / spec.kernel.image), "kernel")
    for dtb in spec.kernel.dtbs:
        ctx.manifest.add_artifact(_publish(kernel / "arch/arm64/boot/dts" / dtb, out / "dtbs" / dtb), "dtb")
    for sample in spec.kernel.samples:
        built = kernel / "samples" / "rust" / f"{sample}.ko"
        if not built.is_file():
            raise StepFailed(f"kernel.samples: {sample}.ko was not built: enable its CONFIG_SAMPLE_* =m in a fragment")
        ctx.manifest.add_artifact(_publish(built, out / "modules" / built.name), "module")
    archive = out / f"modules-{release}.tar.gz"
    pack_tree(ctx.build_dir / "staging/lib/modules" / release, f"lib/modules/{release}", archive)
    ctx.manifest.add_artifact(archive, "modules-tree")
    bundle = devel_bundle_file(ctx, release)
    ctx.manifest.add_artifact(_publish(bundle, out / bundle.name), "devel")


STEPS = [
    Step("source", _source_plan, _source_run, fetch=_source_fetch),
    Step("toolchain-check", _toolcheck_plan, _toolcheck_run, _toolcheck_inputs),
    Step("configure", _configure_plan, _configure_run, _configure_inputs, _config_still_there, builds_kernel=True),
    Step("dtbs", _dtbs_plan, _dtbs_run, _dtbs_inputs, _dtbs_still_there, builds_kernel=True),
    Step("kernel", _kernel_plan, _kernel_run, _kernel_inputs, _kernel_still_there, builds_kernel=True),
    Step("devel", _devel_plan, _devel_run, _devel_inputs, _devel_still_there, builds_kernel=True),
    Step("modules", _modules_plan, _modules_run),
    Step("apps", _apps_plan, _apps_run, _apps_inputs, _apps_still_there, fetch=_apps_fetch),
    Step("collect", _collect_plan, _collect_run, _collect_inputs, _artifacts_still_there),
]
STEP_NAMES = [step.name for step in STEPS]
