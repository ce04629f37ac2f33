"""A board's kernel from an empty build folder (source unpacked, configure, DTBs, Image + modules), as
`invoke build` makes it, against qemu-arm64's minimal kernel in the same run: how much longer the board's
kernel takes than the one every test builds. `python3 bench/board_kernel.py [BOARD]` (default beagleplay:
about two hours on 2 cores). Progress shows as a line a minute."""

import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossboard.board.load import load_board  # noqa: E402
from crossboard.pipeline.context import BuildOptions  # noqa: E402
from crossboard.pipeline.pipeline import build  # noqa: E402
from crossboard.settings import Settings  # noqa: E402

KERNEL_STEPS = frozenset({"source", "toolchain-check", "configure", "dtbs", "kernel"})


def kernel_minutes(name: str, settings: Settings, scratch: Path) -> float:
    board = load_board(name).renamed(f"bench-kernel-{name}")  # a build folder of its own
    try:
        started = time.perf_counter()
        build(
            board,
            dataclasses.replace(settings, out_dir=scratch / "out"),
            BuildOptions(echo=True, plain=True, only=KERNEL_STEPS),
        )
        return (time.perf_counter() - started) / 60
    finally:
        shutil.rmtree(settings.cache_dir / "build" / board.name, ignore_errors=True)
        shutil.rmtree(settings.cache_dir / "work" / board.name, ignore_errors=True)


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "beagleplay"
    settings = Settings.from_environment()
    scratch = Path(tempfile.mkdtemp(prefix="crossboard-bench-"))
    try:
        baseline = kernel_minutes("qemu-arm64", settings, scratch)
        board = kernel_minutes(name, settings, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"qemu-arm64 kernel from nothing: {baseline:.1f} min")
    print(f"{name} kernel from nothing: {board:.1f} min")
    print(f"ratio: {board / baseline:.1f}x")


if __name__ == "__main__":
    main()
