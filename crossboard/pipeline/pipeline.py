"""`invoke build`: the steps in order, inside one runtime, with the manifest kept current."""
from __future__ import annotations

import time
from pathlib import Path

from ..artifacts.manifest import Manifest, StepRecord, earlier_manifest
from ..board.load import LoadedBoard
from ..errors import CrossboardError, UserError
from ..settings import Settings
from ..toolchain.image import image_ref, prepare_toolchain
from ..toolchain.runtime import DockerRuntime, HostRuntime, Runtime
from . import source
from .context import BuildContext, BuildOptions
from .steps import APP_BUILDERS, STEP_NAMES, STEPS

RUNTIMES = ("docker", "host")


def build_folders(board: LoadedBoard, settings: Settings) -> dict[str, Path]:
    plan = source.plan_source(board.spec.kernel.source, settings.cache_dir)
    return {
        "sources": plan.mount,
        "build": settings.cache_dir / "build" / board.name,
        "out": settings.out_dir / board.name,
        "project": board.project_root,
    }


def preflight(board: LoadedBoard) -> None:
    """Input mistakes that would otherwise fail late, after minutes of compiling."""
    for index, module in enumerate(board.module_dirs()):
        if not (module / "Kbuild").is_file() and not (module / "Makefile").is_file():
            raise UserError(f"{board.file.name}: modules[{index}]: {module} has no Kbuild file "
                            f"(it needs a line `obj-m := {module.name}.o`)")


def selected_steps(options: BuildOptions):
    unknown = sorted(options.only - set(STEP_NAMES))
    if unknown:
        raise UserError(f"--only: unknown step {', '.join(unknown)} (steps: {', '.join(STEP_NAMES)})")
    if options.app_builder not in APP_BUILDERS:
        raise UserError(f"--app-builder: unknown builder {options.app_builder!r} (builders: {', '.join(APP_BUILDERS)})")
    return [step for step in STEPS if not options.only or step.name in options.only]


def make_runtime(kind: str, settings: Settings, folders: dict[str, Path], echo: bool, prepare: bool) -> Runtime:
    """The runtime the steps run in; with `prepare`, the toolchain image is built if it changed."""
    if kind == "host":
        return HostRuntime(folders)
    if kind != "docker":
        raise UserError(f"--runtime: unknown runtime {kind!r} (runtimes: {', '.join(RUNTIMES)})")
    if not prepare:
        return DockerRuntime(None, image_ref(settings), folders)
    client, image = prepare_toolchain(settings, echo)
    return DockerRuntime(client, image.ref, folders)


def where(runtime: Runtime) -> str:
    return f"in a container of {runtime.image}" if isinstance(runtime, DockerRuntime) else "on this host"


def print_plan(board: LoadedBoard, settings: Settings, options: BuildOptions, runtime_kind: str) -> None:
    folders = build_folders(board, settings)
    runtime = make_runtime(runtime_kind, settings, folders, options.echo, prepare=False)
    ctx = _context(board, settings, runtime, Manifest(board=board.name, out_dir=folders["out"]), options)
    print(f"build plan for {board.name}, {where(runtime)}:")
    for name, host_path in folders.items():
        print(f"  folder {name}: {host_path} -> {runtime.path(name)}")
    for step in selected_steps(options):
        print(f"[{step.name}]")
        for line in step.plan(ctx):
            print(f"  {line}")


def build(board: LoadedBoard, settings: Settings, options: BuildOptions, runtime_kind: str = "docker") -> Manifest:
    steps = selected_steps(options)
    preflight(board)
    folders = build_folders(board, settings)
    manifest = _start_manifest(board, folders["out"], runtime_kind, steps, options)
    manifest.save()  # at once: a build killed from here on still leaves a manifest saying so
    try:
        runtime = make_runtime(runtime_kind, settings, folders, options.echo, prepare=True)
        if isinstance(runtime, DockerRuntime):
            manifest.image = {"ref": runtime.image, "id": runtime.client.images.get(runtime.image).id}
        with runtime:
            ctx = _context(board, settings, runtime, manifest, options)
            for step in steps:
                _run_step(ctx, step)
    except (CrossboardError, KeyboardInterrupt) as error:
        for record in manifest.steps:
            if record.status == "running":
                record.status = "failed"
        manifest.finish("failed", str(error) or "interrupted")
        raise
    manifest.finish("done")
    return manifest


def _start_manifest(board: LoadedBoard, out_dir: Path, runtime_kind: str, steps, options: BuildOptions) -> Manifest:
    """A new manifest; with --only, the earlier one updated, so the steps not run keep what they made."""
    fresh = Manifest(board=board.name, out_dir=out_dir, runtime=runtime_kind, board_file_sha256=board.sha256)
    earlier = earlier_manifest(out_dir, board.name) if options.only else None
    manifest = earlier or fresh
    manifest.status, manifest.error, manifest.finished = "running", "", ""
    manifest.started, manifest.runtime, manifest.board_file_sha256 = fresh.started, runtime_kind, board.sha256
    previous = {record.name: record for record in manifest.steps}
    running = {step.name for step in steps}
    manifest.steps = [StepRecord(name) if name in running else previous[name]
                      for name in STEP_NAMES if name in running or name in previous]
    return manifest


def _context(board, settings, runtime, manifest, options) -> BuildContext:
    return BuildContext(board=board, settings=settings, runtime=runtime, manifest=manifest, options=options,
                        source_plan=source.plan_source(board.spec.kernel.source, settings.cache_dir))


def _run_step(ctx: BuildContext, step) -> None:
    record = ctx.manifest.step(step.name)
    record.status, record.log = "running", f"logs/{step.name}.log"
    (ctx.out_dir / record.log).unlink(missing_ok=True)  # each log tells of this build only
    ctx.manifest.save()
    if ctx.options.echo:
        print(f"==> [{ctx.board.name}] {step.name}", flush=True)
    started = time.monotonic()
    record.note = step.run(ctx)
    record.seconds = round(time.monotonic() - started, 2)
    record.status = "done"
    ctx.manifest.save()
