"""invoke build for real: the toolchain image, real kernel builds (build folders cached across runs)."""

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import QUIET
from fakes import copy_project, invoke

from crossboard import PROJECT_ROOT
from crossboard.artifacts.files import sha256_of, vermagic_of
from crossboard.artifacts.manifest import load_manifest
from crossboard.board.load import load_board
from crossboard.errors import StepFailed, UserError
from crossboard.pipeline.pipeline import build, build_folders

pytestmark = [pytest.mark.docker, pytest.mark.kernel]

# Kbuild's lines for compile and link work; a no-op build prints none of them.
COMPILE_LINE = re.compile(r"^\s+(CC|CC \[M\]|RUSTC|RUSTC \[M\]|RUSTC L|RUSTC P|LD|LD \[M\]|AR|AS|BINDGEN)\s", re.M)


def test_qemu_build_has_every_artifact(qemu_build):
    out = qemu_build.out_dir
    release = qemu_build.kernel_release
    assert release.endswith("-crossboard")
    for name in (
        "Image",
        "config",
        "modules/rust_minimal.ko",
        "modules/rust_print.ko",
        "modules/hello_rust.ko",
        "apps/hello",
        f"modules-{release}.tar.gz",
    ):
        assert (out / name).is_file(), name
    for module in out.glob("modules/*.ko"):
        assert vermagic_of(module).split()[0] == release
    described = subprocess.run(
        ["file", "-b", str(out / "apps/hello"), str(out / "modules/hello_rust.ko")], capture_output=True, text=True, check=True
    ).stdout
    assert described.count("ARM aarch64") == 2
    assert (
        "ARM64 boot executable Image" in subprocess.run(["file", "-b", str(out / "Image")], capture_output=True, text=True).stdout
    )


def test_the_devel_bundle_holds_what_a_rust_module_build_reads_and_names_its_tools(qemu_build):
    import json
    import tarfile

    release = qemu_build.kernel_release
    top = f"kernel-devel-{release}"
    with tarfile.open(qemu_build.out_dir / f"{top}.tar.gz") as archive:
        names = {name.removeprefix(f"{top}/") for name in archive.getnames()}
        info = json.loads(archive.extractfile(f"{top}/crossboard-devel.json").read())
        macros = archive.extractfile(f"{top}/rust/libmacros.so").read(20)
    for needed in (
        "Makefile",
        ".config",
        "Module.symvers",
        "include/config/auto.conf",
        "include/generated/autoconf.h",
        "include/generated/rustc_cfg",
        "scripts/mod/modpost",
        "scripts/basic/fixdep",
        "scripts/module.lds",
        "rust/libkernel.rmeta",
        "rust/libcore.rmeta",
        "rust/libmacros.so",
    ):
        assert needed in names, needed
    assert not [name for name in names if name.endswith((".o", ".cmd"))]
    assert macros[:4] == b"\x7fELF" and macros[18] == 62  # EM_X86_64: it runs in the compiler, on the build machine
    assert info["kernel_release"] == release and info["kernel_build_id"] == qemu_build.kernel_build_id
    assert info["tools"]["rustc"].startswith("rustc 1.85.1") and info["toolchain"] == "trixie" and info["builds_on"] == "x86_64"


def test_manifest_matches_the_files(qemu_build):
    manifest = load_manifest(qemu_build.out_dir)
    assert manifest["status"] == "done"
    assert {step["status"] for step in manifest["steps"]} <= {"done", "skipped"}  # skipped: inputs unchanged
    assert manifest["tools"]["rustc"].startswith("rustc 1.85.1")
    assert manifest["image"]["ref"].startswith("crossboard/toolchain:")
    assert manifest["config_sha256"] == sha256_of(qemu_build.out_dir / "config")
    kinds = {artifact["kind"] for artifact in manifest["artifacts"]}
    assert kinds == {"kernel", "config", "module", "app", "modules-tree", "devel"}
    for artifact in manifest["artifacts"]:
        file = qemu_build.out_dir / artifact["path"]
        assert artifact["sha256"] == sha256_of(file) and artifact["size"] == file.stat().st_size
        if artifact["kind"] == "module":
            assert artifact["release"] == manifest["kernel_release"]


def test_second_build_runs_no_make_and_starts_no_container(qemu_build, settings, docker):
    containers_before = len(docker.containers.list(all=True))
    again = build(load_board("qemu-arm64"), settings, QUIET)
    assert {record.name: record.status for record in again.steps if record.status != "skipped"} == {
        "source": "done",
        "modules": "done",
    }
    assert again.step("modules").note == "unchanged: hello_rust"
    assert not COMPILE_LINE.findall((qemu_build.out_dir / "logs/modules.log").read_text())
    assert len(docker.containers.list(all=True)) == containers_before
    assert again.image == qemu_build.image
    assert again.kernel_release == qemu_build.kernel_release and again.tools == qemu_build.tools
    assert [a["sha256"] for a in again.artifacts] == [a["sha256"] for a in qemu_build.artifacts]


def test_a_changed_module_is_rebuilt_alone(qemu_build, settings, tmp_path):
    boards = copy_project(tmp_path)
    source = boards.parent / "modules/hello_rust/hello_rust.rs"
    source.write_text(source.read_text() + "\n// changed by a test\n")
    only_modules = dataclasses.replace(QUIET, only=frozenset({"modules"}))
    build(load_board("qemu-arm64", boards), settings, only_modules)
    log = (qemu_build.out_dir / "logs/modules.log").read_text()
    assert re.search(r"RUSTC \[M\] \S*/hello_rust.o", log), log
    again = build(load_board("qemu-arm64", boards), settings, only_modules)
    assert not COMPILE_LINE.findall((qemu_build.out_dir / "logs/modules.log").read_text())
    # an --only build updates the earlier manifest: what the other steps made is still listed
    assert again.status == "done" and again.kernel_release == qemu_build.kernel_release
    assert {a["path"] for a in again.artifacts} == {a["path"] for a in qemu_build.artifacts}
    assert [record.name for record in again.steps] == [record.name for record in qemu_build.steps]


def isolated(settings, tmp_path):
    return dataclasses.replace(settings, cache_dir=tmp_path / "cache", out_dir=tmp_path / "out")


def test_modversions_in_a_fragment_is_caught_at_configure(settings, toolchain_image, tmp_path):
    boards = copy_project(tmp_path)
    (boards / "fragments/rust.config").write_text(
        (boards / "fragments/rust.config").read_text().replace("# CONFIG_MODVERSIONS is not set", "CONFIG_MODVERSIONS=y")
    )
    mine = dataclasses.replace(settings, out_dir=tmp_path / "out")
    board = load_board("qemu-arm64", boards)
    board = board.renamed("qemu-modversions")  # its own build folder
    options = dataclasses.replace(QUIET, only=frozenset({"source", "configure"}))
    with pytest.raises(UserError) as raised:
        build(board, mine, options)
    message = str(raised.value)
    assert "CONFIG_RUST=y requested but the final .config has n" in message
    assert "CONFIG_MODVERSIONS is set and Rust cannot coexist with it" in message
    out = tmp_path / "out/qemu-modversions"
    assert not (out / "config").exists()
    assert load_manifest(out)["status"] == "failed"


def test_a_tarball_with_the_wrong_sha256_is_not_unpacked(settings, toolchain_image, tmp_path):
    fake = tmp_path / "linux.tar.gz"
    subprocess.run(["tar", "-czf", str(fake), "-C", str(PROJECT_ROOT), "boards"], check=True)
    boards = copy_project(tmp_path)
    board = load_board(
        "qemu-arm64", boards, overrides={"kernel": {"source": {"tarball": {"url": fake.as_uri(), "sha256": "0" * 64}}}}
    )
    mine = isolated(settings, tmp_path)
    with pytest.raises(
        UserError,
        match=r"kernel.source.tarball.sha256: .* has sha256 [0-9a-f]{64}, "
        r"the board file says 0{64}; nothing was unpacked",
    ):
        build(board, mine, dataclasses.replace(QUIET, only=frozenset({"source"})))
    assert [p.name for p in (mine.cache_dir / "sources").iterdir()] == [".tarball_0000000000000000.lock"]  # only a lock


def test_a_module_folder_without_kbuild_is_refused_before_anything_runs(settings, tmp_path):
    boards = copy_project(tmp_path)
    (boards.parent / "modules/hello_rust/Kbuild").unlink()
    mine = isolated(settings, tmp_path)
    with pytest.raises(UserError, match=r"^qemu-arm64.yaml: modules\[0\]: .*hello_rust has no Kbuild file"):
        build(load_board("qemu-arm64", boards), mine, QUIET)
    assert not mine.out_dir.exists()


def test_a_debian_source_is_unpacked_by_the_one_container_allowed_to_write_it(settings, toolchain_image, tmp_path):
    mine = isolated(settings, tmp_path)
    built = build(load_board("qemu-arm64"), mine, dataclasses.replace(QUIET, only=frozenset({"source"})))
    assert built.step("source").note == "unpacked"
    tree = next((mine.cache_dir / "sources").glob("linux-source-6.12_*"))
    assert (tree / "Makefile").is_file() and (tree / "scripts/min-tool-version.sh").is_file()


def test_a_module_built_before_the_kernel_says_what_is_missing(settings, toolchain_image, tmp_path):
    mine = isolated(settings, tmp_path)
    with pytest.raises(StepFailed, match=r"not fully built \(no Module.symvers, rust/libkernel.rmeta\)"):
        build(load_board("qemu-arm64"), mine, dataclasses.replace(QUIET, only=frozenset({"modules"})))
    assert load_manifest(mine.out_dir / "qemu-arm64")["steps"][0]["status"] == "failed"


def test_dry_run_prints_the_plan_and_does_nothing(tmp_path):
    result = invoke("build", "--board", "beagleplay", "--dry-run", CROSSBOARD_OUT=str(tmp_path / "out"), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "defconfig" in result.stdout and "ti/k3-am625-beagleplay.dtb" in result.stdout
    assert "M=/crossboard/work/modules/hello_rust" in result.stdout
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="session")
def beagleplay_configured(settings, toolchain_image):
    """defconfig + the Rust and BeaglePlay fragments, and the board's DTB: no full Image (60-100 min here)."""
    options = dataclasses.replace(QUIET, only=frozenset({"source", "toolchain-check", "configure", "dtbs"}))
    return build(load_board("beagleplay"), settings, options)


def test_beagleplay_configures_with_rust_and_builds_its_dtb(beagleplay_configured, settings):
    config = (build_folders(load_board("beagleplay"), settings)["build"] / "kernel/.config").read_text()
    assert "CONFIG_RUST=y" in config.splitlines()
    assert "CONFIG_MMC_SDHCI_AM654=y" in config.splitlines()
    dtb = settings.cache_dir / "build/beagleplay/kernel/arch/arm64/boot/dts/ti/k3-am625-beagleplay.dtb"
    assert dtb.is_file() and dtb.read_bytes()[:4] == b"\xd0\x0d\xfe\xed"


def test_an_app_needing_a_newer_glibc_than_the_board_is_refused_unless_static(qemu_build, settings, tmp_path):
    boards = copy_project(tmp_path)
    mine = dataclasses.replace(settings, out_dir=tmp_path / "out")
    only_apps = dataclasses.replace(QUIET, only=frozenset({"apps"}))
    old_board = {"targets": {"glibc": "2.17"}}
    with pytest.raises(
        StepFailed,
        match=r"apps\[0\] hello needs GLIBC_2\.\d+ but qemu-arm64 has glibc 2\.17 "
        r"\(targets.glibc\): set `static: true`",
    ):
        build(load_board("qemu-arm64", boards, overrides=old_board), mine, only_apps)
    (boards / "qemu-arm64.local.yaml").write_text('targets: {glibc: "2.17"}\napps:\n  - path: apps/hello\n    static: true\n')
    static = build(load_board("qemu-arm64", boards), mine, only_apps)
    assert static.app_glibc == {"hello": ""}


@pytest.mark.parametrize("builder", ["cargo", "cross"])
def test_both_app_builders_compile_with_the_images_pinned_rustc(builder, qemu_build, settings, tmp_path):
    if builder == "cross" and shutil.which("cross") is None:
        pytest.fail("cross is not installed: scripts/install-deps installs it where the host has cargo and rustup")
    boards = copy_project(tmp_path)
    mine = dataclasses.replace(settings, out_dir=tmp_path / "out")
    built = build(
        load_board("qemu-arm64", boards), mine, dataclasses.replace(QUIET, only=frozenset({"apps"}), app_builder=builder)
    )
    assert built.app_builder.startswith("cross on the host" if builder == "cross" else "cargo in the docker runtime")
    assert built.app_builder.endswith("rustc version 1.85.1")  # the image's, whichever builder ran
    work = build_folders(load_board("qemu-arm64", boards), mine)["work"]
    binary = work / "apps/aarch64-unknown-linux-gnu/release/hello"
    described = subprocess.run(["file", "-b", str(binary)], capture_output=True, text=True, check=True).stdout
    assert "ARM aarch64" in described


def rustup_state() -> dict:
    """What a build must leave as it was: the toolchains, their targets and components, and the files."""

    def rustup(*args):
        return subprocess.run(["rustup", *args], capture_output=True, text=True, check=True).stdout

    home = Path(os.environ.get("RUSTUP_HOME", Path.home() / ".rustup"))
    state = {
        "toolchains": rustup("toolchain", "list"),
        "files": sorted((str(p.relative_to(home)), p.stat().st_mtime_ns) for p in home.glob("*/*")),
    }
    for toolchain in rustup("toolchain", "list", "--quiet").split():
        state[toolchain] = rustup("target", "list", "--installed", "--toolchain", toolchain) + rustup(
            "component", "list", "--installed", "--toolchain", toolchain
        )
    return state


def test_cross_leaves_the_host_toolchains_alone_and_builds_offline(qemu_build, settings, tmp_path, monkeypatch):
    if shutil.which("cross") is None or shutil.which("rustup") is None:
        pytest.fail("cross and rustup are needed: scripts/install-deps installs cross where the host has rustup")
    from sshd import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: any download fails at once
    monkeypatch.setenv("RUSTUP_DIST_SERVER", closed)
    monkeypatch.setenv("RUSTUP_UPDATE_ROOT", f"{closed}/rustup")
    before = rustup_state()
    boards = copy_project(tmp_path)
    built = build(
        load_board("qemu-arm64", boards),
        dataclasses.replace(settings, out_dir=tmp_path / "out"),
        dataclasses.replace(QUIET, only=frozenset({"apps"}), app_builder="cross"),
    )
    assert built.step("apps").status == "done"
    assert rustup_state() == before


def test_an_unknown_app_builder_is_refused(settings):
    with pytest.raises(UserError, match=r"^--app-builder: unknown builder 'rustup'"):
        build(load_board("qemu-arm64"), settings, dataclasses.replace(QUIET, app_builder="rustup"))
