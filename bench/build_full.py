"""A full minimal build of a virtual board (qemu-arm64: Linux 6.12 with trixie's tools; qemu-arm64-uboot:
Linux 7.3 with trixie-backports') from an empty build folder: crossboard against the raw commands a
developer types for the same kernel, modules, out-of-tree module and app, in the same toolchain image,
as a ratio. Both use the kernel source already unpacked in the cache. About 20 minutes on 2 cores.

    python3 bench/build_full.py [BOARD]"""

import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raw import hello_cargo_build, kernel_make  # noqa: E402

from crossboard import PROJECT_ROOT  # noqa: E402
from crossboard.board.load import load_board  # noqa: E402
from crossboard.pipeline import source  # noqa: E402
from crossboard.pipeline.context import REPRODUCIBLE_ENV, BuildOptions  # noqa: E402
from crossboard.pipeline.pipeline import build  # noqa: E402
from crossboard.settings import Settings  # noqa: E402
from crossboard.toolchain.engine import docker_client  # noqa: E402
from crossboard.toolchain.image import image_ref  # noqa: E402
from crossboard.toolchain.runtime import DockerRuntime  # noqa: E402
from crossboard.toolchain.stream import Tee  # noqa: E402


def raw_commands(tree: str, fragment_names: list[str]) -> list[list[str]]:
    make = kernel_make(tree)
    fragments = [f"/crossboard/project/boards/{name}" for name in fragment_names]
    return [
        make + ["allnoconfig"],
        [
            "sh",
            f"{tree}/scripts/kconfig/merge_config.sh",
            "-m",
            "-O",
            "/crossboard/build/kernel",
            "/crossboard/build/kernel/.config",
            *fragments,
        ],
        make + ["olddefconfig"],
        make + ["Image", "modules"],
        ["cp", "-r", "/crossboard/project/modules/hello_rust", "/crossboard/build/hello_rust"],
        make + ["M=/crossboard/build/hello_rust", "modules"],
        hello_cargo_build("/crossboard/build/apps"),
    ]


def main() -> None:
    settings = Settings.from_environment()
    name = sys.argv[1] if len(sys.argv) > 1 else "qemu-arm64"
    board = load_board(name)
    plan = source.plan_source(board, settings.cache_dir)
    if not plan.tree_on_host.is_dir():
        sys.exit(f"run `invoke build --board {name}` once first: the benchmark reuses its unpacked source")
    scratch = Path(tempfile.mkdtemp(prefix="crossboard-bench-"))
    bench_board = board.renamed("bench-full-build")  # a build folder of its own
    try:
        started = time.perf_counter()
        # with progress on, as a CI log shows it: a line a minute
        build(
            bench_board,
            dataclasses.replace(settings, out_dir=scratch / "out"),
            BuildOptions(echo=True, plain=True, app_builder="cargo"),
        )
        ours = time.perf_counter() - started

        folders = {"sources": plan.mount, "build": scratch / "raw", "out": scratch / "raw-out", "project": PROJECT_ROOT}
        with DockerRuntime(
            docker_client(), image_ref(docker_client(), settings, board.profile), folders, label="bench"
        ) as runtime:
            started = time.perf_counter()
            for argv in raw_commands(f"/crossboard/sources/{plan.key}", board.spec.kernel.config.fragments):
                env = {**REPRODUCIBLE_ENV, "CARGO_HOME": "/crossboard/build/cargo-home"}
                assert runtime.run(argv, Tee(echo=False), env=env) == 0, argv
            raw = time.perf_counter() - started
    finally:
        shutil.rmtree(settings.cache_dir / "build" / bench_board.name, ignore_errors=True)
        shutil.rmtree(settings.cache_dir / "work" / bench_board.name, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{name}, toolchain profile {board.spec.toolchain}, kernel source {plan.key}")
    print(f"raw commands (allnoconfig, merge_config, olddefconfig, Image + modules, M=, cargo): {raw:.0f} s")
    print(f"invoke build from an empty build folder (and its checks, manifest, collect): {ours:.0f} s")
    print(f"ratio: {ours / raw:.3f}x")


if __name__ == "__main__":
    main()
