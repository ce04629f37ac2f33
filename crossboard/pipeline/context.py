"""Everything a build step needs: the board, the runtime, the folders, the manifest, the options."""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts.manifest import Manifest
from ..board.load import LoadedBoard
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


@dataclass(frozen=True)
class BuildOptions:
    dry_run: bool = False
    strict_toolchain: bool = False
    only: frozenset[str] = frozenset()
    echo: bool = True
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    app_builder: str = "auto"  # auto, cross or cargo: see steps.app_builder


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
    def out_dir(self) -> Path:
        return self.runtime.folders["out"]

    @property
    def kernel_dir(self) -> str:
        """O=, as the runtime sees it."""
        return f"{self.runtime.path('build')}/kernel"

    @property
    def kernel_dir_on_host(self) -> Path:
        return self.build_dir / "kernel"

    def make(self, *targets: str, module_dir: str | None = None) -> list[str]:
        argv = ["make", "-C", self.source_tree, f"O={self.kernel_dir}", "ARCH=arm64", "LLVM=1",
                f"-j{self.options.jobs}"]
        if module_dir:
            argv.append(f"M={module_dir}")
        return argv + list(targets)

    def tee(self, step: str) -> Tee:
        return Tee(self.out_dir / "logs" / f"{step}.log", echo=self.options.echo)

    def show(self, argv: list[str]) -> str:
        return shlex.join(argv)
