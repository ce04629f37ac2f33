"""A no-op `invoke build --board qemu-arm64` (the whole command: Python, the Docker engine asked for the
image, every step's inputs hashed) against the raw no-op commands it would otherwise wrap (kernel make,
out-of-tree module make, cargo build), run in an already running toolchain container, as a ratio.
Target <= 0.2x: a build whose inputs did not change runs no make at all."""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raw import hello_cargo_build, kernel_make  # noqa: E402
from timing import median_seconds  # noqa: E402

from crossboard import PROJECT_ROOT  # noqa: E402
from crossboard.board.load import load_board  # noqa: E402
from crossboard.pipeline import source  # noqa: E402
from crossboard.pipeline.pipeline import build_folders  # noqa: E402
from crossboard.settings import Settings  # noqa: E402
from crossboard.toolchain.engine import docker_client  # noqa: E402
from crossboard.toolchain.image import image_ref  # noqa: E402
from crossboard.toolchain.runtime import DockerRuntime  # noqa: E402
from crossboard.toolchain.stream import Tee  # noqa: E402

ROUNDS = 5


def main() -> None:
    settings = Settings.from_environment()
    board = load_board("qemu-arm64")
    invoke_build = [sys.executable, "-m", "invoke", "build", "--board", "qemu-arm64", "--quiet", "--app-builder", "cargo"]
    subprocess.run(invoke_build, cwd=PROJECT_ROOT, check=True, capture_output=True)  # warm: everything built
    folders = build_folders(board, settings)
    tree = f"/crossboard/sources/{source.plan_source(board, settings.cache_dir).key}"
    make = kernel_make(tree)
    raw_commands = [
        make + ["Image", "modules"],
        make + ["M=/crossboard/work/modules/hello_rust", "modules"],
        hello_cargo_build("/crossboard/work/apps"),
    ]
    with DockerRuntime(docker_client(), image_ref(docker_client(), settings, board.profile), folders, label="bench") as runtime:

        def raw():
            for argv in raw_commands:
                assert runtime.run(argv, Tee(echo=False), env={"CARGO_HOME": "/crossboard/work/cargo-home"}) == 0

        baseline = median_seconds(raw, ROUNDS)

    def ours():
        subprocess.run(invoke_build, cwd=PROJECT_ROOT, check=True, capture_output=True)

    ours_seconds = median_seconds(ours, ROUNDS)
    print(f"raw no-op commands (kernel make, module make, cargo), median of {ROUNDS}: {baseline:.2f} s")
    print(f"no-op invoke build (whole command, container start included), median of {ROUNDS}: {ours_seconds:.2f} s")
    print(f"ratio: {ours_seconds / baseline:.2f}x (target <= 0.20x)")


if __name__ == "__main__":
    main()
