"""`invoke build --toolchain all`: the board built with every toolchain profile that can build it, each
into its own folders, and one table of what each gave. A profile that fails does not stop the others."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..artifacts.manifest import Manifest, earlier_manifest
from ..board.load import LoadedBoard
from ..errors import CrossboardError, StepFailed
from ..settings import Settings
from ..toolchain.profiles import profile_names
from ..toolchain.runtime import Runtime
from ..versions import version_in
from .context import BuildOptions
from .pipeline import build, build_folders

# What the table shows of the tools the toolchain-check step recorded, in this order.
TOOL_COLUMNS = ("rustc", "bindgen", "llvm")


@dataclass(frozen=True)
class MatrixRow:
    profile: str
    folder: str  # the build's name: its folders in the cache and out/
    result: str  # built, refused, failed or not offered
    detail: str  # the kernel release built, or why not
    tools: str = ""
    seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.result in ("built", "not offered")


def build_all_profiles(
    board: LoadedBoard,
    settings: Settings,
    options: BuildOptions,
    runtime_kind: str,
    runtime_for: Callable[[LoadedBoard], Runtime] | None = None,
) -> list[MatrixRow]:
    """`runtime_for`: the runtime each profile's build runs in, made by the caller (the tests' recording
    runtime) instead of one of `runtime_kind`."""
    rows = []
    for name in profile_names():
        try:
            variant = board.with_toolchain(name)
        except CrossboardError as error:
            rows.append(MatrixRow(name, "", "not offered", str(error).removeprefix(f"--toolchain {name}: ")))
            continue
        if options.echo:
            print(f"==> [{board.name}] toolchain profile {name} into {build_folders(variant, settings)['out']}", flush=True)
        rows.append(_build_one(variant, settings, options, runtime_kind, runtime_for(variant) if runtime_for else None))
    return rows


def _build_one(
    board: LoadedBoard, settings: Settings, options: BuildOptions, runtime_kind: str, runtime: Runtime | None
) -> MatrixRow:
    started = time.monotonic()
    error: CrossboardError | None = None
    try:
        build(board, settings, options, runtime_kind, runtime)
    except CrossboardError as failure:  # this profile's row says so; the others still build
        error = failure
    seconds = round(time.monotonic() - started, 1)
    recorded = earlier_manifest(build_folders(board, settings)["out"], board.name)
    result, detail = _outcome(recorded, error)
    return MatrixRow(board.spec.toolchain, board.build_name, result, detail, _tools(recorded.tools if recorded else {}), seconds)


def _outcome(recorded: Manifest | None, error: CrossboardError | None) -> tuple[str, str]:
    """`refused` when the kernel's minimum tool versions turned the profile away before compiling."""
    if error is None:
        return "built", (recorded.kernel_release if recorded else "") or "done"
    failed = [step.name for step in recorded.steps if step.status == "failed"] if recorded else []
    if isinstance(error, StepFailed) and failed == ["toolchain-check"]:
        return "refused", str(error)
    return "failed", (f"{failed[0]}: " if failed else "") + str(error)


def _tools(recorded: dict) -> str:
    versions = []
    for tool in TOOL_COLUMNS:
        found = version_in(recorded.get(tool, ""))
        if found:
            versions.append(f"{tool} {'.'.join(map(str, found))}")
    return ", ".join(versions)


def table(rows: list[MatrixRow]) -> str:
    """A header, then one line per profile: profile, tools, result, time."""
    header = ("profile", "tools", "result", "time")
    cells = [
        (row.profile, row.tools or "-", f"{row.result}: {row.detail}", f"{row.seconds:.0f} s" if row.seconds is not None else "-")
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(3)]
    return "\n".join("  ".join(line[i].ljust(widths[i]) for i in range(3)) + "  " + line[3] for line in [header, *cells])
