"""The whole loop on the virtual board: build -> QEMU boot -> deploy -> insmod, for real."""

import dataclasses
import json

import pytest
from conftest import QUIET, booted
from fakes import copy_project

from crossboard import kconfig
from crossboard.artifacts.manifest import Manifest, finished_build
from crossboard.board.load import load_board
from crossboard.deploy.config_pull import pull_config
from crossboard.deploy.run import DeployOptions, deploy_board, deploy_many
from crossboard.errors import StepFailed
from crossboard.pipeline.pipeline import build, build_folders
from crossboard.remote.access import Access
from crossboard.virtual import qemu

pytestmark = [pytest.mark.docker, pytest.mark.kernel, pytest.mark.qemu]


@pytest.fixture(scope="module")
def virtual_board(qemu_build, settings):
    """qemu-arm64 booted on a free port, with its own known_hosts; stopped even when a test fails."""
    from sshd import free_port

    board = load_board("qemu-arm64", overrides={"connection": {"port": free_port()}})
    vboard = qemu.VirtualBoard(board, settings)
    yield from booted(vboard)


def test_it_looks_like_a_beagleplay_to_deploy(virtual_board, qemu_build):
    board = virtual_board.board
    # strict host keys: the key was recorded when the root was made, nothing is trusted on first use
    with Access(virtual_board.settings.known_hosts).open(board) as remote:
        assert remote.run("id -un").stdout.strip() == "debian"
        assert remote.run("uname -r").stdout.strip() == qemu_build.kernel_release
        assert remote.run("sudo -n id -u").stdout.strip() == "0"
        assert remote.run(f"test -f /lib/modules/{qemu_build.kernel_release}/modules.dep").code == 0
        assert remote.run("uname -m").stdout.strip() == "aarch64"
        assert remote.run("test -f /mnt/out/manifest.json").code == 0  # out/<board>/ over 9p
    assert f"crossboard virtual board: {qemu_build.kernel_release} up" in virtual_board.console_log.read_text()
    assert "SSH answering" in qemu.status(virtual_board)
    assert f"console {qemu.console_url(virtual_board)} (log {virtual_board.console_log})" in qemu.status(virtual_board)


def test_build_deploy_insmod_loop(virtual_board):
    report = deploy_many(
        [virtual_board.board],
        virtual_board.settings.out_dir,
        DeployOptions(echo=False),
        Access(virtual_board.settings.known_hosts),
    )[0]
    assert report["ok"], report
    modules = {module["name"]: module for module in report["modules"]}
    assert set(modules) == {"rust_minimal", "rust_print", "hello_rust"}
    assert any("Rust minimal sample (init)" in line for line in modules["rust_minimal"]["load_messages"])
    assert any("My numbers are [72, 108, 200]" in line for line in modules["rust_minimal"]["unload_messages"])
    assert any("Hello from an out-of-tree Rust module (init)" in line for line in modules["hello_rust"]["load_messages"])
    assert all(module["unloaded"] for module in modules.values())
    assert report["apps"][0]["stdout"].strip() == "Hello, crossboard! from aarch64"
    saved = json.loads((virtual_board.out_dir / "deploy.json").read_text())
    assert saved["ok"] and saved["board_release"] == report["board_release"]
    # the exact-kernel check ran for real: the board shows the very build the manifest records
    built = finished_build(virtual_board.out_dir, "qemu-arm64")
    assert len(built.kernel_build_id) == 40 and saved["board_kernel_build"] == built.kernel_build_id


def test_the_inner_loop_reloads_one_module_and_leaves_it_loaded(virtual_board):
    from crossboard.commands import reload_module

    board = virtual_board.board
    try:
        first = reload_module(board, "hello_rust", virtual_board.settings, echo=False)
        again = reload_module(board, "hello_rust", virtual_board.settings, echo=False)  # loaded: rmmod, insmod
        for report in (first, again):
            assert report["ok"] and report["apps"] == [], report
            assert [module["name"] for module in report["modules"]] == ["hello_rust"]
        reloaded = again["modules"][0]
        assert reloaded["loaded"] and not reloaded["unloaded"]
        assert any("Goodbye from an out-of-tree Rust module (exit)" in line for line in reloaded["load_messages"])
        assert "Hello from an out-of-tree Rust module (init)" in reloaded["load_messages"][-1]
        with Access(virtual_board.settings.known_hosts).open(board) as remote:
            assert remote.run("test -d /sys/module/hello_rust").code == 0
            remote.run("rm /run/crossboard/loaded/hello_rust", privileged=True)  # as if the board had loaded it
        with pytest.raises(StepFailed, match="deploy failed on 1 of 1 boards"):
            reload_module(board, "hello_rust", virtual_board.settings, echo=False)
        theirs = json.loads((virtual_board.out_dir / "deploy.json").read_text())["modules"][0]
        assert theirs["refused"].startswith("a module named hello_rust is loaded and crossboard did not load it")
        assert not theirs["load_messages"] or not any("Goodbye" in line for line in theirs["load_messages"])
        with Access(virtual_board.settings.known_hosts).open(board) as remote:
            assert remote.run("test -d /sys/module/hello_rust").code == 0  # still loaded: not ours to unload
    finally:
        with Access(virtual_board.settings.known_hosts).open(board) as remote:
            remote.run("rmmod hello_rust", privileged=True)


def test_a_module_for_another_release_is_refused_and_the_board_keeps_running(virtual_board, tmp_path):
    release = finished_build(virtual_board.out_dir, "qemu-arm64").kernel_release  # 6.12.N-crossboard, N as Debian has it
    other = release.replace("-crossboard", "-somebody")
    out = tmp_path / "out" / "qemu-arm64"
    (out / "modules").mkdir(parents=True)
    module = out / "modules/rust_minimal.ko"
    built = (virtual_board.out_dir / "modules/rust_minimal.ko").read_bytes()
    module.write_bytes(built.replace(f"vermagic={release}".encode(), f"vermagic={other}".encode()))
    manifest = Manifest(board="qemu-arm64", out_dir=out)
    manifest.add_artifact(module, "module")
    manifest.finish("done")
    board = virtual_board.board
    report = deploy_board(board, tmp_path / "out", DeployOptions(echo=False), Access(virtual_board.settings.known_hosts))
    assert not report["ok"]
    assert report["modules"][0]["refused"].startswith(f"rust_minimal was built for {other} but the board runs {release}")
    with Access(virtual_board.settings.known_hosts).open(board) as remote:
        assert remote.run("test -d /sys/module/rust_minimal").code != 0
        assert remote.run("uname -r").code == 0


def test_config_pull_builds_against_the_running_kernel(virtual_board, qemu_build, settings, tmp_path):
    boards = copy_project(tmp_path)
    connection = {"port": virtual_board.board.spec.connection.port, "key": str(virtual_board.keys_dir / "id_ed25519")}
    board = load_board("qemu-arm64", boards, overrides={"connection": connection})
    config_file, release = pull_config(board, Access(settings.known_hosts))
    assert release == qemu_build.kernel_release
    assert "CONFIG_RUST=y" in config_file.read_text().splitlines()
    # which running build it came from, so that modules built on it may load there
    assert kconfig.pulled_build_id(config_file) == qemu_build.kernel_build_id != ""
    pulled = load_board("qemu-arm64", boards)
    assert pulled.spec.kernel.config.base == "file:qemu-arm64.pulled.config"
    assert pulled.spec.kernel.localversion == "-crossboard"
    # configure on the pulled config in a build folder of its own: RUST sticks, the release is the board's
    pulled = pulled.renamed("qemu-pulled")
    mine = dataclasses.replace(settings, out_dir=tmp_path / "out")
    build(pulled, mine, dataclasses.replace(QUIET, only=frozenset({"source", "configure"})))
    final = (build_folders(pulled, mine)["build"] / "kernel/.config").read_text().splitlines()
    assert "CONFIG_RUST=y" in final and 'CONFIG_LOCALVERSION="-crossboard"' in final


def test_a_new_module_and_app_build_load_and_run_on_the_virtual_board(virtual_board, settings, tmp_path):
    from crossboard.new import new_app, new_module

    boards = copy_project(tmp_path)
    new_module(load_board("qemu-arm64", boards), "blinky")
    new_app(load_board("qemu-arm64", boards), "greeter")
    connection = {"port": virtual_board.board.spec.connection.port, "key": str(virtual_board.keys_dir / "id_ed25519")}
    board = load_board("qemu-arm64", boards, overrides={"connection": connection})
    mine = dataclasses.replace(settings, out_dir=tmp_path / "out")
    build(board, mine, QUIET)  # the kernel is the virtual board's, unchanged: modules, apps, collect
    report = deploy_many([board], mine.out_dir, DeployOptions(echo=False, keep_loaded=False), Access(settings.known_hosts))[0]
    assert report["ok"], report
    blinky = next(module for module in report["modules"] if module["name"] == "blinky")
    assert blinky["loaded"] and blinky["unloaded"] and any("blinky loaded" in line for line in blinky["load_messages"])
    greeter = next(app for app in report["apps"] if app["name"] == "greeter")
    assert greeter["stdout"].strip() == "greeter runs on aarch64"


def test_a_module_built_against_the_devel_bundle_alone_loads_and_is_the_full_trees_module(
    virtual_board, qemu_build, settings, tmp_path
):
    """Another machine, as far as the build can tell: a cache of its own, holding nothing of the kernel
    but the bundle; the same toolchain image."""
    bundle = qemu_build.out_dir / next(a["path"] for a in qemu_build.artifacts if a["kind"] == "devel")
    boards = copy_project(tmp_path)
    connection = {"port": virtual_board.board.spec.connection.port, "key": str(virtual_board.keys_dir / "id_ed25519")}
    overrides = {"connection": connection, "kernel": {"source": {"devel": str(bundle)}}, "apps": []}
    board = load_board("qemu-arm64", boards, overrides=overrides)
    elsewhere = dataclasses.replace(settings, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    manifest = build(board, elsewhere, QUIET)
    assert [record.name for record in manifest.steps] == ["source", "toolchain-check", "modules", "apps", "collect"]
    assert sorted(path.name for path in (tmp_path / "cache/sources").iterdir() if not path.name.endswith(".lock")) == [
        f"devel_{manifest.devel_bundle['sha256'][:16]}"
    ]
    assert not (tmp_path / "cache/build/qemu-arm64/kernel/vmlinux").exists()
    assert manifest.kernel_build_id == qemu_build.kernel_build_id
    built = (tmp_path / "out/qemu-arm64/modules/hello_rust.ko").read_bytes()
    assert built == (qemu_build.out_dir / "modules/hello_rust.ko").read_bytes()
    report = deploy_many([board], elsewhere.out_dir, DeployOptions(echo=False), Access(settings.known_hosts))[0]
    assert report["ok"], report
    (hello,) = report["modules"]
    assert hello["name"] == "hello_rust" and hello["loaded"] and hello["unloaded"]
    assert any("Hello from an out-of-tree Rust module (init)" in line for line in hello["load_messages"])


def test_deploy_through_a_labgrid_place_loads_the_modules_on_the_virtual_board(virtual_board, settings, tmp_path):
    """The virtual board exported by a labgrid exporter (its SSH port as the place's NetworkService): the
    board file names the place, not an address."""
    from labgrid_lab import PLACE, Lab

    from crossboard import commands

    lab = Lab(tmp_path, virtual_board.board.spec.connection.port, "debian")
    try:
        boards = copy_project(tmp_path)
        board_file = boards / "qemu-arm64.yaml"
        by_address = "  host: 127.0.0.1\n  port: 2222\n"
        assert by_address in board_file.read_text()
        place = f"  labgrid: {{place: {PLACE}, coordinator: '{lab.coordinator}'}}\n"
        board_file.write_text(board_file.read_text().replace(by_address, place))
        (boards / "qemu-arm64.local.yaml").write_text(f"connection: {{key: '{virtual_board.keys_dir / 'id_ed25519'}'}}\n")
        mine = dataclasses.replace(settings, boards_dir=boards)
        (report,) = commands.deploy("qemu-arm64", mine, DeployOptions(echo=False))
        assert report["ok"], report
        assert {module["name"] for module in report["modules"] if module["loaded"]} == {
            "rust_minimal",
            "rust_print",
            "hello_rust",
        }
        assert lab.holder() == ""
    finally:
        lab.stop()
