"""Boards that are sshd servers on 127.0.0.1 with a hand-made build: for deploy tests and benchmarks."""
from __future__ import annotations

import shutil
import stat
import tarfile
from pathlib import Path

from crossboard import PROJECT_ROOT
from crossboard.artifacts.manifest import Manifest
from crossboard.board.load import LoadedBoard, load_board

BOARD = """\
description: sshd on 127.0.0.1 standing in for a board
arch: arm64
targets: {{glibc: "2.99"}}
kernel:
  source: {{debian: linux-source-6.12}}
  config: {{base: allnoconfig}}
apps:
  - path: apps/hello
    args: [lab]
    expect_stdout: ["Hello, lab!"]
connection:
  host: 127.0.0.1
  port: {port}
  user: {user}
  key: {key}
  sudo: true
  host_key_policy: trust-new
  connect_timeout: 2
deploy:
  remote_dir: {remote_dir}
{boot}"""
# Runs on the x86 host where the real app (aarch64) would not.
FAKE_APP = "#!/bin/sh\necho \"Hello, $1! from $(uname -m)\"\n"


def copy_project(tmp_path: Path, board: str = "qemu-arm64") -> Path:
    """A project folder of our own with the board files and what they name, for tests that change them;
    returns its boards folder."""
    project = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "boards", project / "boards",
                    ignore=shutil.ignore_patterns("*.local.yaml", "*.pulled.config"))
    for folder in ("modules", "apps"):
        shutil.copytree(PROJECT_ROOT / folder, project / folder, ignore=shutil.ignore_patterns("target"))
    return project / "boards"


def fake_built_board(project: Path, out_root: Path, name: str, port: int, user: str, key: Path, remote_dir: str,
                     module_release: str | None = None, extra_files: dict[str, bytes] | None = None,
                     boot_partition: str | None = None, kernel_release: str | None = None) -> LoadedBoard:
    """A board file for the server at `port` and a finished build in out_root/name: the app above,
    a module for `module_release`, any extra files (as apps), and with `kernel_release` a kernel, a DTB
    and a modules tree."""
    boards = project / "boards"
    boards.mkdir(parents=True, exist_ok=True)
    if not (project / "apps/hello").is_dir():
        shutil.copytree(PROJECT_ROOT / "apps/hello", project / "apps/hello", ignore=shutil.ignore_patterns("target"))
    boot = f"  boot:\n    partition: {boot_partition}\n" if boot_partition else ""
    (boards / f"{name}.yaml").write_text(BOARD.format(port=port, user=user, key=key, remote_dir=remote_dir, boot=boot))
    out = out_root / name
    (out / "apps").mkdir(parents=True, exist_ok=True)
    (out / "apps/hello").write_text(FAKE_APP)
    (out / "apps/hello").chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    manifest = Manifest(board=name, out_dir=out)
    manifest.add_artifact(out / "apps/hello", "app")
    if module_release:
        (out / "modules").mkdir(exist_ok=True)
        module = out / "modules/rust_minimal.ko"
        module.write_bytes(b"\x7fELF\0vermagic=" + module_release.encode() + b" SMP mod_unload aarch64\0")
        manifest.add_artifact(module, "module")
    for relative, data in (extra_files or {}).items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(data)
        manifest.add_artifact(out / relative, "app")
    if kernel_release:
        _fake_kernel(out, kernel_release, manifest)
    manifest.finish("done")
    return load_board(name, boards)


def _fake_kernel(out: Path, release: str, manifest: Manifest) -> None:
    (out / "Image").write_bytes(b"ARMd fake kernel image " + release.encode())
    (out / "dtbs/ti").mkdir(parents=True)
    (out / "dtbs/ti/k3-am625-beagleplay.dtb").write_bytes(b"\xd0\x0d\xfe\xed fake")
    tree = out / "tree" / "lib/modules" / release
    tree.mkdir(parents=True)
    (tree / "modules.order").write_text("")
    archive = out / f"modules-{release}.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(tree, arcname=f"lib/modules/{release}")
    manifest.kernel_release = release
    manifest.add_artifact(out / "Image", "kernel")
    manifest.add_artifact(out / "dtbs/ti/k3-am625-beagleplay.dtb", "dtb")
    manifest.add_artifact(archive, "modules-tree")
