"""Boards that are sshd servers on 127.0.0.1 with a hand-made build: for deploy tests and benchmarks."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

from crossboard import PROJECT_ROOT
from crossboard.artifacts.manifest import Manifest
from crossboard.board.load import LoadedBoard, load_board
from crossboard.toolchain.runtime import Runtime

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
FAKE_APP = '#!/bin/sh\necho "Hello, $1! from $(uname -m)"\n'


def copy_project(tmp_path: Path, board: str = "qemu-arm64") -> Path:
    """A project folder of our own with the board files and what they name, for tests that change them;
    returns its boards folder."""
    project = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "boards", project / "boards", ignore=shutil.ignore_patterns("*.local.yaml", "*.pulled.config"))
    for folder in ("modules", "apps"):
        shutil.copytree(PROJECT_ROOT / folder, project / folder, ignore=shutil.ignore_patterns("target"))
    return project / "boards"


def fake_built_board(
    project: Path,
    out_root: Path,
    name: str,
    port: int,
    user: str,
    key: Path,
    remote_dir: str,
    module_release: str | None = None,
    extra_files: dict[str, bytes] | None = None,
    boot_partition: str | None = None,
    kernel_release: str | None = None,
    app_script: str = FAKE_APP,
) -> LoadedBoard:
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
    (out / "apps/hello").write_text(app_script)
    (out / "apps/hello").chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    manifest = Manifest(board=name, out_dir=out)
    manifest.add_artifact(out / "apps/hello", "app", source="apps/hello")
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


# -- a fake kernel tree and a runtime that records commands instead of running them -------------------

FAKE_MAKEFILE = "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\nEXTRAVERSION =\n"
MINIMUMS = {"rustc": "1.78.0", "bindgen": "0.65.1", "llvm": "13.0.1"}
VERSIONS = {"rustc": "rustc 1.85.1 (fake)", "bindgen": "bindgen 0.71.1", "clang": "Debian clang version 19.1.7"}


def fake_kernel_tarball(folder: Path, makefile: str = FAKE_MAKEFILE) -> tuple[str, str]:
    """A tarball holding just enough of a kernel tree to pass for one: (file:// URL, sha256)."""
    import hashlib

    tree = folder / "linux-fake"
    (tree / "scripts/kconfig").mkdir(parents=True, exist_ok=True)
    (tree / "Makefile").write_text(makefile)
    (tree / "scripts/min-tool-version.sh").write_text("# answered by RecordingRuntime\n")
    archive = folder / "linux-fake.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(tree, arcname="linux-fake")
    return archive.as_uri(), hashlib.sha256(archive.read_bytes()).hexdigest()


class RecordingRuntime(Runtime):
    """Stands in for the toolchain container (hence its name): records each command and makes the files
    the real one would (a .config from the fragments, an Image, .ko files with a vermagic, an app binary),
    so the pipeline's decisions can be tested in milliseconds. `commands` lists what ran, as argv lists."""

    name = "docker"

    def __init__(
        self, folders: dict[str, Path], toolchain_id: str = "sha256:fake-1", slow: float = 0.0, versions: dict | None = None
    ):
        super().__init__(folders)
        self.toolchain_id = toolchain_id
        self.slow = slow  # seconds the kernel make takes, for tests of builds at the same time
        self.versions = VERSIONS | (versions or {})  # what `rustc --version` and the like print
        self.commands: list[list[str]] = []

    def path(self, folder: str) -> str:
        return str(self.folders[folder])

    def toolchain(self) -> dict[str, str]:
        return {"ref": "crossboard/toolchain:fake", "id": self.toolchain_id}

    def run(self, argv, tee, env=None, cwd=None) -> int:
        self.commands.append(list(argv))
        if argv[0] == "sh" and argv[1].endswith("min-tool-version.sh"):
            tee.write(f"{MINIMUMS[argv[2]]}\n".encode())
        elif argv[0] in self.versions:
            tee.write(f"{self.versions[argv[0]]}\n".encode())
        elif argv[0] == "sh" and argv[1].endswith("merge_config.sh"):
            out, start, fragments = Path(argv[4]), Path(argv[5]), argv[6:]
            text = start.read_text() if start.is_file() else ""
            (out / ".config").write_text(text + "".join(Path(f).read_text() for f in fragments))
        elif argv[0] == "make":
            self._make(argv)
        elif argv[:2] == ["sh", "-c"] and "install-extmod-build" in argv[2]:
            self._assemble_devel_bundle(argv[2])
        elif argv[:2] == ["cargo", "build"]:
            self._cargo(argv, tee)
        return 0

    @staticmethod
    def _cargo(argv, tee) -> None:
        """cargo build as it behaves: each bin target of the package (its [[bin]] names, else the
        package's) made, and said in a JSON message when asked for them."""
        import json
        import tomllib

        target_dir = Path(argv[argv.index("--target-dir") + 1])
        manifest = Path(argv[argv.index("--manifest-path") + 1])
        package = tomllib.loads(manifest.read_text())
        names = [target["name"] for target in package.get("bin", [])] or [package["package"]["name"]]
        for name in names:
            binary = target_dir / argv[argv.index("--target") + 1] / "release" / name
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_bytes(b"\x7fELF fake app " + (manifest.parent / "src/main.rs").read_bytes())
            if any(arg.startswith("--message-format=json") for arg in argv):
                message = {"reason": "compiler-artifact", "target": {"kind": ["bin"], "name": name}, "executable": str(binary)}
                tee.write(json.dumps(message).encode() + b"\n")
        tee.write(b"    Finished `release` profile [optimized] target(s)\n")

    @staticmethod
    def _assemble_devel_bundle(script: str) -> None:
        """What the kernel's install-extmod-build and crossboard's Rust part copy, of the fake tree."""
        import shlex

        def last_word(prefix: str) -> str:
            return shlex.split(next(line for line in script.splitlines() if line.startswith(prefix)))[-1]

        dest, kernel = Path(last_word("dest=").removeprefix("dest=")), Path(last_word("cd "))
        for name in (".config", "Module.symvers", "include/config/kernel.release", "rust/libkernel.rmeta"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(kernel / name, dest / name)
        (dest / "Makefile").write_text(FAKE_MAKEFILE)
        (dest / ".builds-on").write_text("x86_64\n")

    def _make(self, argv) -> None:
        import re
        import time

        values = dict(arg.split("=", 1) for arg in argv if "=" in arg and not arg.startswith("-"))
        targets = [arg for arg in argv[3:] if "=" not in arg and not arg.startswith("-")]
        kernel = Path(values.get("O", argv[2]))  # a devel bundle is its own build folder
        config = kernel / ".config"
        if "M" in values:
            module = Path(values["M"])
            release = (kernel / "include/config/kernel.release").read_text().strip()
            for name in re.findall(r"obj-m\s*[:+]?=\s*(\w+)\.o", (module / "Kbuild").read_text()):
                (module / f"{name}.ko").write_bytes(
                    b"\x7fELF\0vermagic=" + release.encode() + b" SMP mod_unload aarch64\0" + (module / f"{name}.rs").read_bytes()
                )
            return
        for target in targets:
            if target.endswith("config") and target != "olddefconfig":
                kernel.mkdir(parents=True, exist_ok=True)
                config.write_text("")
            elif target.endswith(".dtb"):
                (kernel / "arch/arm64/boot/dts" / target).parent.mkdir(parents=True, exist_ok=True)
                (kernel / "arch/arm64/boot/dts" / target).write_bytes(b"\xd0\x0d\xfe\xed")
            elif target in ("Image", "Image.gz"):
                time.sleep(self.slow)
                localversion = re.search(r'^CONFIG_LOCALVERSION="(.*)"$', config.read_text(), re.M)
                release = "6.12.0" + (localversion[1] if localversion else "")
                for name, data in {
                    "arch/arm64/boot/" + target: config.read_bytes(),
                    "vmlinux": b"ELF",
                    "Module.symvers": b"",
                    "rust/libkernel.rmeta": b"",
                    "include/config/kernel.release": f"{release}\n".encode(),
                }.items():
                    (kernel / name).parent.mkdir(parents=True, exist_ok=True)
                    (kernel / name).write_bytes(data)
                for sample in re.findall(r"^CONFIG_SAMPLE_RUST_(\w+)=m$", config.read_text(), re.M):
                    ko = kernel / f"samples/rust/rust_{sample.lower()}.ko"
                    ko.parent.mkdir(parents=True, exist_ok=True)
                    ko.write_bytes(b"\x7fELF\0vermagic=" + release.encode() + b" SMP mod_unload aarch64\0")
            elif target == "modules_install":
                release = (kernel / "include/config/kernel.release").read_text().strip()
                tree = Path(values["INSTALL_MOD_PATH"]) / "lib/modules" / release
                tree.mkdir(parents=True, exist_ok=True)
                (tree / "modules.order").write_text("")


FAKE_BOARD = """\
description: a board whose kernel is a fake tree, built by the recording runtime
arch: arm64
targets: {{glibc: "2.41"}}
kernel:
  source:
    {source}
  config:
    base: allnoconfig
    fragments: [fragments/qemu-arm64.config, fragments/rust.config]
  localversion: -fake
  samples: [rust_minimal]
modules: [modules/hello_rust]
apps:
  - path: apps/hello
connection: {{host: 127.0.0.1}}
deploy: {{remote_dir: /tmp/crossboard}}
"""


def fake_board(boards: Path, name: str, source: str) -> LoadedBoard:
    """boards/<name>.yaml for the fake tree; `source` is the kernel.source mapping as one YAML line."""
    (boards / f"{name}.yaml").write_text(FAKE_BOARD.format(source=source))
    return load_board(name, boards)


def invoke(*arguments: str, timeout: float = 120, **settings: str) -> subprocess.CompletedProcess:
    """`invoke ARGUMENTS` as a user runs it, in the project, with environment variables added
    (CROSSBOARD_OUT=..., INVOKE_RUNTIME_CONFIG=...); its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *arguments],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **settings},
        timeout=timeout,
    )


def held_packages(docker, image_ref: str) -> dict[str, str]:
    """The Debian version of each package a toolchain image's profile names, from the image's labels."""
    from crossboard.toolchain.image import LABEL_PREFIX, packages_label

    return packages_label(docker.images.get(image_ref).labels[f"{LABEL_PREFIX}packages"])


def held_version(docker, image_ref: str, package: str) -> str:
    """The upstream version of a package a toolchain image holds, from its labels: `1:21.1.8-3~bpo13+2` is 21.1.8."""
    held = held_packages(docker, image_ref)
    return re.match(r"^(?:\d+:)?([0-9.]*[0-9])", held[package])[1]  # type: ignore[index]
