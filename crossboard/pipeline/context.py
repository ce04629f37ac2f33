"""Everything a build step needs: the board, the runtime, the folders, the manifest, the options."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts.manifest import Manifest
from ..board.load import LoadedBoard
from ..progress import Progress, Remembered
from ..settings import Settings
from ..toolchain.runtime import Runtime
from ..toolchain.stream import Tee
from .source import SourcePlan

# Fixed values so that two clean builds of the same inputs give identical files.
REPRODUCIBLE_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "Thu Jan  1 00:00:00 UTC 1970",
    "KBUILD_BUILD_USER": "crossboard",
    "KBUILD_BUILD_HOST": "crossboard",
    "KBUILD_BUILD_VERSION": "1",
}


# Work whose result lives in the shared kernel build folder.
KERNEL_WORK = frozenset({"toolchain-check", "configure", "dtbs", "kernel", "devel"})
STAMPS = ".crossboard-stamps"  # beside the work they describe


@dataclass(frozen=True)
class BuildOptions:
    dry_run: bool = False
    strict_toolchain: bool = False
    only: frozenset[str] = frozenset()
    echo: bool = True  # False: print nothing at all (tests, benchmarks)
    verbose: bool = False  # the tools' own output on the terminal too, not only in the logs
    plain: bool = False  # progress as a plain line a minute even on a terminal (--quiet)
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    app_builder: str = "auto"  # auto, cross or cargo: see steps.app_builder
    # "all": each step fetches what it needs (with the network) and builds; "fetch": only the fetching,
    # "build": only the building, the fetching done by a "fetch" pass before (an engine runs the two
    # in different containers: the network and the shared sources only for the first)
    phase: str = "all"


@dataclass
class BuildContext:
    board: LoadedBoard
    settings: Settings
    runtime: Runtime
    manifest: Manifest
    options: BuildOptions
    source_plan: SourcePlan

    @property
    def source_tree(self) -> str:
        """The kernel tree as the runtime sees it."""
        return self.source_plan.tree_in(self.runtime)

    @property
    def build_dir(self) -> Path:
        return self.runtime.folders["build"]

    @property
    def work_dir(self) -> Path:
        """This project's own part of the build (module copies, app targets): another clone of the
        project building the same board has its own."""
        return self.runtime.folders["work"]

    @property
    def out_dir(self) -> Path:
        return self.runtime.folders["out"]

    @property
    def toolchain_identity(self) -> str | None:
        """The toolchain image's id; None on the host runtime, whose tools may change unseen."""
        return self.manifest.image.get("id")

    @property
    def tree_identity(self) -> str | None:
        """What the kernel tree is, when it cannot change (a Debian package, a tarball, a git ref);
        None for a local tree, which anyone may edit."""
        return self.source_plan.key or None

    def stamp(self, work: str) -> Path:
        """Where the stamp of a piece of work lives: beside the kernel build for the kernel's own
        steps (the folder all clones share), else in this project's work folder."""
        folder = self.build_dir / "kernel" if work in KERNEL_WORK else self.work_dir
        return folder / STAMPS / f"{work}.json"

    @property
    def from_bundle(self) -> bool:
        """The kernel is a devel bundle's, built elsewhere: only modules and apps are built here."""
        return self.source_plan.bundle is not None

    @property
    def kernel_dir(self) -> str:
        """The built kernel, as the runtime sees it: O=, or the unpacked devel bundle."""
        return self.source_tree if self.from_bundle else f"{self.runtime.path('build')}/kernel"

    @property
    def kernel_dir_on_host(self) -> Path:
        return self.source_plan.tree_on_host if self.from_bundle else self.build_dir / "kernel"

    def make(self, *targets: str, module_dir: str | None = None) -> list[str]:
        """make in the kernel tree; a devel bundle is source and build folder in one, so no O=."""
        output = [] if self.from_bundle else [f"O={self.kernel_dir}"]
        argv = ["make", "-C", self.source_tree, *output, "ARCH=arm64", "LLVM=1", f"-j{self.options.jobs}"]
        if module_dir:
            argv.append(f"M={module_dir}")
        return argv + list(targets)

    def tee(self, step: str, progress: Progress | None = None) -> Tee:
        return Tee(self.out_dir / "logs" / f"{step}.log", echo=self.options.echo and self.options.verbose, progress=progress)

    @contextmanager
    def counted_tee(self, step: str) -> Iterator[Tee]:
        """The step's log, with kbuild's lines showing how far along it is. The estimate is the count of
        the last run that started from nothing (a kernel with no vmlinux yet; the DTBs always)."""
        fresh = step != "kernel" or not (self.kernel_dir_on_host / "vmlinux").exists()
        memory = Remembered(self.kernel_dir_on_host / STAMPS / "progress.json")
        progress = Progress(
            f"[{self.board.name}] {step}",
            expected=memory.get(step) if fresh else None,
            mode=Progress.mode_for(self.options.echo, self.options.plain or self.options.verbose),
        )
        with self.tee(step, progress) as tee:
            yield tee
            if fresh:
                memory.put(step, progress.done)

    def show(self, argv: list[str]) -> str:
        return shlex.join(argv)
