"""`invoke dev --module hello_rust` on the virtual board against the raw steps a developer would type:
make M= in the toolchain container, a copy of the .ko over ssh, ssh sudo rmmod/insmod/dmesg. Each round first
changes the module's source the same way, so both sides compile."""

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossboard import PROJECT_ROOT  # noqa: E402
from crossboard.board.load import load_board  # noqa: E402
from crossboard.pipeline.pipeline import build_folders  # noqa: E402
from crossboard.pipeline.source import plan_source  # noqa: E402
from crossboard.settings import Settings  # noqa: E402
from crossboard.toolchain.engine import docker_client  # noqa: E402
from crossboard.toolchain.image import image_ref  # noqa: E402
from crossboard.toolchain.runtime import DockerRuntime  # noqa: E402
from crossboard.toolchain.stream import Tee  # noqa: E402

ROUNDS = 3
SOURCE = PROJECT_ROOT / "modules/hello_rust/hello_rust.rs"
INVOKE = [sys.executable, "-m", "invoke"]


def main() -> None:
    settings = Settings.from_environment()
    board = load_board("qemu-arm64")
    port = board.spec.connection.port
    key = board.project_root / board.spec.connection.key
    ssh = [
        "-i",
        str(key),
        "-o",
        f"UserKnownHostsFile={PROJECT_ROOT / '.crossboard/known_hosts'}",
        "-o",
        "StrictHostKeyChecking=yes",
    ]
    original = SOURCE.read_text()
    subprocess.run(INVOKE + ["qemu.up"], cwd=PROJECT_ROOT, check=True, capture_output=True)
    folders = build_folders(board, settings)
    tree = f"/crossboard/sources/{plan_source(board, settings.cache_dir).key}"
    work = settings.cache_dir / "build/qemu-arm64/modules/hello_rust"
    timings = {"raw": [], "dev": []}
    try:
        with DockerRuntime(
            docker_client(), image_ref(docker_client(), settings, board.profile), folders, label="bench"
        ) as runtime:
            for round_number in range(ROUNDS):
                for side in ("raw", "dev"):
                    SOURCE.write_text(original + f"\n// bench {side} {round_number}\n")
                    started = time.perf_counter()
                    if side == "dev":
                        subprocess.run(
                            INVOKE + ["dev", "--module", "hello_rust"], cwd=PROJECT_ROOT, check=True, capture_output=True
                        )
                    else:
                        (work / SOURCE.name).write_text(SOURCE.read_text())
                        make = [
                            "make",
                            "-C",
                            tree,
                            "O=/crossboard/build/kernel",
                            "ARCH=arm64",
                            "LLVM=1",
                            "-j2",
                            "M=/crossboard/build/modules/hello_rust",
                            "modules",
                        ]
                        assert runtime.run(make, Tee(echo=False)) == 0
                        # the guest's dropbear has no SFTP, which today's scp needs: ssh + cat is the raw copy
                        with open(work / "hello_rust.ko", "rb") as module:
                            subprocess.run(
                                ["ssh", "-p", str(port), *ssh, "debian@127.0.0.1", "cat > /home/debian/hello_rust.ko"],
                                stdin=module,
                                check=True,
                            )
                        subprocess.run(
                            [
                                "ssh",
                                "-p",
                                str(port),
                                *ssh,
                                "debian@127.0.0.1",
                                "sudo rmmod hello_rust 2>/dev/null; sudo insmod /home/debian/hello_rust.ko "
                                "&& sudo dmesg | tail -n 3",
                            ],
                            check=True,
                            capture_output=True,
                        )
                    timings[side].append(time.perf_counter() - started)
    finally:
        SOURCE.write_text(original)
        subprocess.run(INVOKE + ["qemu.down"], cwd=PROJECT_ROOT, capture_output=True)
    raw, dev = statistics.median(timings["raw"]), statistics.median(timings["dev"])
    print(f"raw steps (make M=, ssh copy, ssh insmod), median of {ROUNDS}: {raw:.2f} s")
    print(f"invoke dev --module hello_rust, median of {ROUNDS}: {dev:.2f} s")
    print(f"ratio: {dev / raw:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
