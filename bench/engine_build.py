"""Builds on a remote engine against the local path (run as root, after `invoke build --board qemu-arm64`):
qemu-arm64's modules and app built against its devel bundle, a no-op build and a one-module build (a
line added to hello_rust.rs, a new one each round), through the local engine with bind mounts (the
baseline), with `--runtime volumes` on the same engine, and through DOCKER_HOST=ssh://... (a test sshd
on 127.0.0.1 in front of the same engine), as ratios in one run."""

import os
import subprocess
import sys
import tempfile
from itertools import count
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from sshd import SshServer, docker_over_ssh, free_port, make_key, prepare_lab  # noqa: E402
from timing import median_seconds  # noqa: E402

from crossboard import PROJECT_ROOT  # noqa: E402
from crossboard.settings import Settings  # noqa: E402

ROUNDS = 5
MODULE_SOURCE = PROJECT_ROOT / "modules/hello_rust/hello_rust.rs"


def main() -> None:
    settings = Settings.from_environment()
    bundle = next((settings.out_dir / "qemu-arm64").glob("kernel-devel-*.tar.gz"), None)
    if bundle is None:
        sys.exit("no devel bundle in out/qemu-arm64: run invoke build --board qemu-arm64 first")
    folder = Path(tempfile.mkdtemp(prefix="crossboard-bench-engine-"))
    server = SshServer(free_port(), make_key(folder / "host_key")).start(folder)
    original = MODULE_SOURCE.read_text()
    edits = count()
    try:
        over_ssh = docker_over_ssh(folder, server, prepare_lab(folder))
        paths = {  # name: (--runtime, environment)
            "local engine, bind mounts": ("docker", {"CROSSBOARD_OUT": str(folder / "out-local")}),
            "--runtime volumes": ("volumes", {"CROSSBOARD_OUT": str(folder / "out-volumes")}),
            "DOCKER_HOST=ssh://": ("docker", over_ssh | {"CROSSBOARD_OUT": str(folder / "out-ssh")}),
        }

        def build(runtime: str, environment: dict[str, str]) -> None:
            subprocess.run(
                [sys.executable, "-m", "invoke", "build", "--quiet", "--runtime", runtime, "--kernel-source", f"devel:{bundle}"],
                cwd=PROJECT_ROOT,
                env={**os.environ, **environment},
                check=True,
                capture_output=True,
            )

        def one_module(runtime: str, environment: dict[str, str]) -> None:
            MODULE_SOURCE.write_text(original + f"\nconst _BENCH_EDIT: u32 = {next(edits)};\n")
            build(runtime, environment)

        results = {}
        for name, (runtime, environment) in paths.items():
            build(runtime, environment)  # warm: its outputs there and here
            noop = median_seconds(lambda r=runtime, e=environment: build(r, e), ROUNDS)
            results[name] = (noop, median_seconds(lambda r=runtime, e=environment: one_module(r, e), ROUNDS))
        base_noop, base_module = results["local engine, bind mounts"]
        for name, (noop, module) in results.items():
            print(
                f"{name}, median of {ROUNDS}: no-op {noop:.2f} s ({noop / base_noop:.2f}x), "
                f"one module changed {module:.2f} s ({module / base_module:.2f}x)"
            )
    finally:
        MODULE_SOURCE.write_text(original)
        server.stop()
        subprocess.run(["rm", "-rf", str(folder)], check=False)


if __name__ == "__main__":
    main()
