"""`invoke build`: the steps in order, inside one runtime, with the manifest kept current."""

from __future__ import annotations

import copy
import hashlib
import time
from contextlib import ExitStack
from pathlib import Path

from ..artifacts.manifest import STEP_FIELDS, Manifest, StepRecord, earlier_manifest
from ..board.load import LoadedBoard
from ..errors import CrossboardError, StepFailed, UserError
from ..locking import holding
from ..settings import Settings
from ..toolchain.engine import engine_if_running, engine_url, is_local
from ..toolchain.image import image_ref, prepare_toolchain
from ..toolchain.runtime import DockerRuntime, HostRuntime, Runtime, image_inside
from . import source, stamps
from .context import BuildContext, BuildOptions
from .steps import STEP_NAMES, STEPS, Step, app_builder

RUNTIMES = ("docker", "host", "volumes")  # volumes: commands.build hands it to engine_build


def project_key(project_root: Path) -> str:
    """Tells clones of the project apart: each builds its own modules and apps."""
    return hashlib.sha256(str(project_root.resolve()).encode()).hexdigest()[:12]


def work_folder(board: LoadedBoard, settings: Settings) -> Path:
    return settings.cache_dir / "work" / board.build_name / project_key(board.project_root)


def build_folders(board: LoadedBoard, settings: Settings) -> dict[str, Path]:
    """The kernel build folder is the board's, shared by every clone (it depends only on the board's
    kernel); the work folder (module copies, app targets, the virtual board's root) is this clone's.
    A board built with another profile than its own has folders of its own (`<board>@<profile>`)."""
    plan = source.plan_source(board, settings.cache_dir)
    return {
        "sources": plan.mount,
        "build": settings.cache_dir / "build" / board.build_name,
        "work": work_folder(board, settings),
        "out": board.out_dir(settings.out_dir),
        "project": board.project_root,
    }


def preflight(board: LoadedBoard) -> None:
    """Input mistakes that would otherwise fail late, after minutes of compiling."""
    for index, module in enumerate(board.module_dirs()):
        if not (module / "Kbuild").is_file() and not (module / "Makefile").is_file():
            raise UserError(
                f"{board.file.name}: modules[{index}]: {module} has no Kbuild file (it needs a line `obj-m := {module.name}.o`)"
            )


def selected_steps(board: LoadedBoard, options: BuildOptions, runtime_kind: str) -> list[Step]:
    """Every option checked before anything is printed or run. Against a devel bundle the kernel is
    built already: the steps that build one are left out."""
    unknown = sorted(options.only - set(STEP_NAMES))
    if unknown:
        raise UserError(f"--only: unknown step {', '.join(unknown)} (steps: {', '.join(STEP_NAMES)})")
    if runtime_kind not in RUNTIMES:
        raise UserError(f"--runtime: unknown runtime {runtime_kind!r} (runtimes: {', '.join(RUNTIMES)})")
    bundled = board.devel_bundle() is not None
    kernel_steps = sorted(step.name for step in STEPS if step.builds_kernel and step.name in options.only)
    if bundled and kernel_steps:
        raise UserError(
            f"--only {','.join(kernel_steps)}: kernel.source is a devel bundle, a kernel built already: "
            f"only {', '.join(step.name for step in STEPS if not step.builds_kernel)} run against it"
        )
    steps = [step for step in STEPS if (not options.only or step.name in options.only) and not (bundled and step.builds_kernel)]
    if any(step.name == "apps" for step in steps):
        app_builder(options.app_builder, runtime_kind)
    return steps


def make_runtime(
    kind: str,
    settings: Settings,
    board: LoadedBoard,
    folders: dict[str, Path],
    echo: bool,
    prepare: bool,
    verbose: bool = False,
    plain: bool = False,
) -> Runtime:
    """The runtime the board's steps run in; with `prepare`, its profile's image is built if it changed."""
    if kind == "host":
        return HostRuntime(folders, image_inside())
    if not prepare:  # a plan: the engine, where it runs, only says what the image is
        engine = engine_if_running()
        return DockerRuntime(engine, image_ref(engine, settings, board.profile), folders)
    if not is_local(url := engine_url()):  # its bind mounts would be folders of the engine's machine
        raise UserError(
            f"the Docker engine at {url} cannot see this machine's folders: this command needs a local engine "
            "(unset DOCKER_HOST or DOCKER_CONTEXT for it); invoke build runs on a remote engine"
        )
    client, image = prepare_toolchain(settings, board.profile, echo, verbose, plain)
    return DockerRuntime(client, image.ref, folders)


def where(runtime: Runtime) -> str:
    return f"in a container of {runtime.image}" if isinstance(runtime, DockerRuntime) else "on this host"


def print_plan(board: LoadedBoard, settings: Settings, options: BuildOptions, runtime_kind: str) -> None:
    steps = selected_steps(board, options, runtime_kind)
    folders = build_folders(board, settings)
    runtime = make_runtime(runtime_kind, settings, board, folders, options.echo, prepare=False)
    manifest = Manifest(board=board.name, out_dir=folders["out"])
    if isinstance(runtime, DockerRuntime):
        manifest.image = {"ref": runtime.image}  # the image a build would use (its id once it exists)
    ctx = build_context(board, settings, runtime, manifest, options)
    print(f"build plan for {board.name} with toolchain profile {board.spec.toolchain}, {where(runtime)}:")
    for name, host_path in folders.items():
        print(f"  folder {name}: {host_path} -> {runtime.path(name)}")
    for step in steps:
        print(f"[{step.name}]")
        for line in step.plan(ctx):
            print(f"  {line}")
    if isinstance(runtime, DockerRuntime):
        print(f"would run: {', '.join(steps_that_would_run(board, settings, options, runtime)) or 'nothing (inputs unchanged)'}")


def steps_that_would_run(board: LoadedBoard, settings: Settings, options: BuildOptions, runtime: Runtime) -> list[str]:
    """The steps a build would run now: those that always run (they check for themselves, as source
    and modules do), the first whose inputs changed since it last succeeded, and every step after that one (they
    may read what it makes). Asks the engine for the image's id; with no image yet, every step."""
    manifest = Manifest(board=board.name, out_dir=build_folders(board, settings)["out"])
    try:
        manifest.image = runtime.toolchain()
    except CrossboardError:
        return [step.name for step in selected_steps(board, options, runtime.name)]
    ctx = build_context(board, settings, runtime, manifest, options)
    would: list[str] = []
    changed = False
    for step in selected_steps(board, options, runtime.name):
        inputs = step.inputs(ctx)
        # a reused step hands its recorded fields on, as in a build: later steps' inputs read them
        if changed or _reused(ctx, step, inputs) is None:
            would.append(step.name)
            changed = changed or inputs is not None
    return would


def _reused(ctx: BuildContext, step: Step, inputs: str | None) -> dict | None:
    """The step's stamp when its inputs are as when it last succeeded and what it made is still there,
    its recorded manifest fields then given to ctx.manifest; None when it must run."""
    earlier = stamps.current(ctx.stamp(step.name), inputs)
    if earlier is None or not step.still_there(ctx, earlier):
        return None
    for name, value in earlier["manifest"].items():
        setattr(ctx.manifest, name, value)
    return earlier


def build(
    board: LoadedBoard, settings: Settings, options: BuildOptions, runtime_kind: str = "docker", runtime: Runtime | None = None
) -> Manifest:
    """`runtime`: one made by the caller (the tests' recording runtime), instead of one of `runtime_kind`."""
    runtime_kind = runtime.name if runtime else runtime_kind
    steps = selected_steps(board, options, runtime_kind)
    preflight(board)
    folders = build_folders(board, settings)
    say = print if options.echo else (lambda line: None)
    with ExitStack() as locks:
        # always in this order, so two builds never wait for each other crosswise
        for name, what in (
            ("out", f"the output folder of {board.name}"),
            ("work", f"this clone's work folder of {board.name}"),
            ("build", f"the kernel build folder of {board.name}"),
        ):
            locks.enter_context(holding(folders[name], what, say))
        return _build_locked(board, settings, options, runtime_kind, steps, folders, runtime)


def _build_locked(
    board: LoadedBoard,
    settings: Settings,
    options: BuildOptions,
    runtime_kind: str,
    steps: list[Step],
    folders: dict[str, Path],
    runtime: Runtime | None,
) -> Manifest:
    manifest = _start_manifest(board, folders["out"], runtime_kind, steps, options)
    manifest.save()  # at once: a build killed from here on still leaves a manifest saying so
    try:
        runtime = runtime or make_runtime(
            runtime_kind, settings, board, folders, options.echo, prepare=True, verbose=options.verbose, plain=options.plain
        )
        manifest.image = runtime.toolchain()
        with runtime:
            ctx = build_context(board, settings, runtime, manifest, options)
            for step in steps:
                _run_step(ctx, step)
        if options.phase == "fetch":  # the build pass that follows finishes the manifest
            return manifest
        unfinished = [record.name for record in manifest.steps if record.status not in ("done", "skipped")]
        if unfinished:
            raise StepFailed(
                f"step {', '.join(unfinished)} did not finish in an earlier build of {board.name}: "
                f"run invoke build --board {board.name} without --only"
            )
    except BaseException as error:
        for record in manifest.steps:
            if record.status == "running":
                record.status = "failed"
        reason = (
            str(error)
            if isinstance(error, CrossboardError)
            else ("interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}")
        )
        manifest.finish("failed", reason or "interrupted")
        raise
    manifest.finish("done")
    return manifest


def _start_manifest(board: LoadedBoard, out_dir: Path, runtime_kind: str, steps, options: BuildOptions) -> Manifest:
    """A new manifest; with --only, the earlier one updated, so the steps not run keep what they made."""
    fresh = Manifest(
        board=board.name, out_dir=out_dir, runtime=runtime_kind, toolchain=board.spec.toolchain, board_file_sha256=board.sha256
    )
    earlier = earlier_manifest(out_dir, board.name) if options.only else None
    manifest = earlier or fresh
    manifest.status, manifest.error, manifest.finished = "running", "", ""
    manifest.started, manifest.runtime, manifest.board_file_sha256 = fresh.started, runtime_kind, board.sha256
    manifest.toolchain = fresh.toolchain
    previous = {record.name: record for record in manifest.steps}
    running = {step.name for step in steps}
    manifest.steps = [
        StepRecord(name) if name in running else previous[name] for name in STEP_NAMES if name in running or name in previous
    ]
    return manifest


def build_context(board, settings, runtime, manifest, options) -> BuildContext:
    """What the board's steps see: its source plan under its profile, the runtime, the manifest, the options."""
    return BuildContext(
        board=board,
        settings=settings,
        runtime=runtime,
        manifest=manifest,
        options=options,
        source_plan=source.plan_source(board, settings.cache_dir, manifest.image),
    )


def _step_fields(manifest: Manifest) -> dict:
    return {name: getattr(manifest, name) for name in STEP_FIELDS}


def _run_step(ctx: BuildContext, step: Step) -> None:
    """Run the step, or, when its inputs are as when it last succeeded, give the manifest what it
    recorded then and say so."""
    if ctx.options.phase == "fetch" and step.fetch is None:
        return  # nothing to fetch: the build pass that follows runs it
    record = ctx.manifest.step(step.name)
    stamp, inputs = ctx.stamp(step.name), step.inputs(ctx)
    earlier = _reused(ctx, step, inputs)
    if earlier is not None:
        record.status, record.note, record.log = "skipped", earlier["note"], ""
        ctx.manifest.save()
        if ctx.options.echo:
            print(f"==> [{ctx.board.name}] {step.name}: inputs unchanged, not run ({earlier['note']})", flush=True)
        return
    stamps.forget(stamp)
    record.status, record.log = "running", f"logs/{step.name}.log"
    phase = ctx.options.phase
    if phase != "build":  # each log tells of this build only (a "build" pass goes on with the fetch's)
        (ctx.out_dir / record.log).unlink(missing_ok=True)
    ctx.manifest.save()
    if ctx.options.echo:
        print(f"==> [{ctx.board.name}] {step.name}" + (" (fetch)" if phase == "fetch" else ""), flush=True)
    before = copy.deepcopy(_step_fields(ctx.manifest))  # steps change some fields in place
    started = time.monotonic()
    notes = [step.fetch(ctx)] if step.fetch and phase != "build" else []
    if phase == "fetch":
        return
    record.note = "; ".join(note for note in [*notes, step.run(ctx)] if note)
    record.seconds = round(time.monotonic() - started, 2)
    record.status = "done"
    made = {name: value for name, value in _step_fields(ctx.manifest).items() if value != before[name]}
    stamps.remember(stamp, inputs, record.note, made)
    ctx.manifest.save()
