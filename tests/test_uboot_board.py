"""Installing our kernel through a real bootloader: the U-Boot shape of the virtual board boots the stock
kernel (qemu-arm64's Linux 6.12) from a FAT partition's extlinux.conf, and `deploy --kernel --reboot` must
bring it back on ours (qemu-arm64-uboot's Linux 7.3, built with the trixie-backports profile), rollback
on the stock one again."""

import dataclasses
import json
import re
import shlex
import struct

import pytest
from conftest import QUIET, booted
from fakes import copy_project, held_version, invoke

from crossboard.artifacts.manifest import Manifest
from crossboard.board.load import load_board
from crossboard.deploy.kernel_install import install_kernel, rollback
from crossboard.deploy.run import DeployOptions, deploy_many
from crossboard.errors import StepFailed, UserError
from crossboard.pipeline.pipeline import build
from crossboard.remote.access import Access
from crossboard.remote.console import REBOOT_LOG
from crossboard.virtual import qemu

pytestmark = [pytest.mark.docker, pytest.mark.kernel, pytest.mark.qemu]

CONF = "/boot/firmware/extlinux/extlinux.conf"


@pytest.fixture(scope="module")
def uboot_build(qemu_build, backports_image, settings):
    """The kernel to install: Linux 7.3 with qemu-arm64's configuration and the 7.x Rust samples, built
    with the trixie-backports profile (a second image and a second cold build)."""
    return build(load_board("qemu-arm64-uboot"), settings, QUIET)


@pytest.fixture(scope="module")
def uboot_board(uboot_build, settings):
    """qemu-arm64-uboot booted from a fresh disk on a free port; stopped even when a test fails."""
    from sshd import free_port

    board = load_board("qemu-arm64-uboot", overrides={"connection": {"port": free_port()}})
    vboard = qemu.VirtualBoard(board, settings)
    yield from booted(vboard, fresh=True)


def _on_board(vboard, command: str, privileged: bool = False):
    board = vboard.board
    with Access(vboard.settings.known_hosts).open(board) as remote:
        return remote.run(command, privileged=privileged)


def test_it_boots_the_stock_kernel_through_u_boot_and_extlinux(uboot_board, qemu_build, uboot_build):
    assert _on_board(uboot_board, "uname -r").stdout.strip() == qemu_build.kernel_release
    assert qemu_build.kernel_release.startswith("6.12.") and uboot_build.kernel_release.startswith("7.3.")
    mounts = _on_board(uboot_board, "cat /proc/mounts").stdout
    assert "/dev/root / ext4 rw" in mounts and "/dev/vda1 /boot/firmware vfat" in mounts
    assert _on_board(uboot_board, f"cat {CONF}").stdout.startswith("# The stock boot menu")
    console = uboot_board.console_log.read_text(errors="replace")
    assert "U-Boot 2025.01" in console and "Linux microSD" in console
    # the 2026 BeaglePlay image's shape: a gzip-compressed kernel U-Boot unpacks, and an initrd
    assert "Retrieving file: /Image.gz" in console and "Retrieving file: /initrd.img" in console


def test_a_broken_extlinux_conf_is_refused_before_anything_changes(uboot_board, uboot_build):
    original = _on_board(uboot_board, f"cat {CONF}").stdout
    broken = original.replace("default Linux microSD", "default Linux eMMC")
    assert _on_board(uboot_board, f"printf %s {shlex.quote(broken)} > {CONF}", privileged=True).code == 0
    try:
        with pytest.raises(UserError, match="names no label"):
            install_kernel(uboot_board.board, uboot_board.settings.out_dir, Access(uboot_board.settings.known_hosts))
        assert _on_board(uboot_board, f"cat {CONF}").stdout == broken
        listing = _on_board(uboot_board, "ls /boot/firmware /lib/modules").stdout.split()
        assert "crossboard" not in listing and uboot_build.kernel_release not in listing
    finally:
        _on_board(uboot_board, f"printf %s {shlex.quote(original)} > {CONF}", privileged=True)


def test_install_reboot_load_modules_rollback_reboot(uboot_board, uboot_build, qemu_build, tmp_path):
    board, out = uboot_board.board, uboot_board.settings.out_dir
    stock_conf = _on_board(uboot_board, f"cat {CONF}").stdout
    record = install_kernel(board, out, Access(uboot_board.settings.known_hosts), reboot=True)
    assert record["previous_release"] == qemu_build.kernel_release
    assert record["state"] == "installed" and record["tried"] == "rebooted"
    assert _on_board(uboot_board, "uname -r").stdout.strip() == uboot_build.kernel_release
    # booted once through the try-once script, then committed as the default only after it passed
    assert "crossboard: putting the stock boot menu back, then trying" in uboot_board.console_log.read_text(errors="replace")
    committed = _on_board(uboot_board, f"cat {CONF}").stdout
    assert f"default crossboard-{uboot_build.kernel_release}" in committed and "label Linux microSD" in committed
    assert _on_board(uboot_board, "ls /boot/firmware /boot/firmware/extlinux").stdout.split().count("boot.scr") == 0
    # the point of it all: modules built for our kernel load on the board, with their messages, a
    # 7.x-only sample among them and hello_rust from the source qemu-arm64 builds for 6.12; the app runs
    report = deploy_many([board], out, DeployOptions(echo=False), Access(uboot_board.settings.known_hosts))[0]
    assert report["ok"], report
    assert {module["name"] for module in report["modules"]} == {"rust_minimal", "rust_print", "rust_misc_device", "hello_rust"}
    assert [app["name"] for app in report["apps"]] == ["hello"]
    # KUnit on the board: the kernel crate's doctests (and its own suites) ran at boot, hello_rust's
    # suite as it loaded
    assert "rust_doctests_kernel" in {test["suite"] for test in report["boot_tests"]}
    assert not [test for test in report["boot_tests"] if test["status"] == "failed"]
    hello = next(module for module in report["modules"] if module["name"] == "hello_rust")
    assert [(test["test"], test["status"]) for test in hello["tests"]] == [
        ("greeting_says_hello", "ok"),
        ("greeting_names_its_phase", "ok"),
    ]
    failing = _deploy_a_failing_suite(uboot_board, tmp_path)
    assert not failing["ok"]
    assert [(test["test"], test["status"]) for test in failing["modules"][-1]["tests"]] == [("passes", "ok"), ("fails", "failed")]

    rollback(board, Access(uboot_board.settings.known_hosts), reboot=True)
    assert _on_board(uboot_board, "uname -r").stdout.strip() == qemu_build.kernel_release
    assert _on_board(uboot_board, f"cat {CONF}").stdout == stock_conf
    listing = _on_board(uboot_board, "ls /boot/firmware /lib/modules").stdout.split()
    assert "crossboard" not in listing and uboot_build.kernel_release not in listing


KUNIT_FAILS = """\
// SPDX-License-Identifier: GPL-2.0
//! A module whose KUnit suite has a failing test, for the tests of crossboard's report.
use kernel::prelude::*;

module! {
    type: KunitFails,
    name: "kunit_fails",
    authors: ["crossboard tests"],
    description: "A KUnit suite with a failing test",
    license: "GPL",
}

struct KunitFails;

impl kernel::Module for KunitFails {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(KunitFails)
    }
}

#[kunit_tests(kunit_fails)]
mod tests {
    #[test]
    fn passes() {
        assert_eq!(1 + 1, 2);
    }

    #[test]
    fn fails() {
        assert_eq!(1 + 1, 3);
    }
}
"""


def _deploy_a_failing_suite(uboot_board, tmp_path) -> dict:
    """A project copy whose board has one more module, with a failing KUnit test: built against the
    same 7.3 kernel build (cached), deployed to the board; its report."""
    boards = copy_project(tmp_path)
    module = boards.parent / "modules" / "kunit_fails"
    module.mkdir()
    (module / "Kbuild").write_text("obj-m := kunit_fails.o\n")
    (module / "kunit_fails.rs").write_text(KUNIT_FAILS)
    ours = uboot_board.board
    overrides = {
        "modules": ["modules/hello_rust", "modules/kunit_fails"],
        "apps": [],
        "connection": {"port": ours.spec.connection.port, "key": str(ours.project_root / ours.spec.connection.key)},
    }
    board = load_board(ours.name, boards, overrides=overrides)
    settings = dataclasses.replace(uboot_board.settings, out_dir=tmp_path / "out")
    build(board, settings, QUIET)
    with pytest.raises(StepFailed, match="deploy failed on 1 of 1 boards"):
        deploy_many([board], settings.out_dir, DeployOptions(echo=False), Access(settings.known_hosts))
    return json.loads((settings.out_dir / ours.name / "deploy.json").read_text())


def _board_with_broken_kernel(uboot_board, uboot_build, out_root, corrupt):
    """A copy of the board's build whose Image is `corrupt(Image)`, and the board with a short reboot timeout."""
    built = uboot_board.out_dir
    out = out_root / uboot_board.board.name
    manifest = Manifest(board=uboot_board.board.name, out_dir=out, kernel_release=uboot_build.kernel_release)
    artifacts = {a["kind"]: a for a in json.loads((built / "manifest.json").read_text())["artifacts"]}
    for kind in ("kernel", "modules-tree"):
        target = out / artifacts[kind]["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        data = (built / artifacts[kind]["path"]).read_bytes()
        target.write_bytes(corrupt(data) if kind == "kernel" else data)
        manifest.add_artifact(target, kind)
    manifest.finish("done")
    spec = uboot_board.board.spec
    return dataclasses.replace(
        uboot_board.board, spec=spec.model_copy(update={"deploy": spec.deploy.model_copy(update={"reboot_timeout": 45})})
    )


def _back_on_stock(uboot_board, stock_conf):
    assert _on_board(uboot_board, f"cat {CONF}").stdout == stock_conf
    listing = _on_board(uboot_board, "ls /boot/firmware /lib/modules").stdout.split()
    assert "crossboard" not in listing and "boot.scr" not in listing


def panicking(image: bytes) -> bytes:
    """The kernel with its init paths renamed: it boots, mounts the root, finds no init and panics."""
    for path in (b"/sbin/init\0", b"/etc/init\0", b"/bin/init\0", b"/bin/sh\0"):
        assert image.count(path) == 1, path
        image = image.replace(path, path[:-5] + b"xxxx\0")
    return image


# An arm64 Image header U-Boot accepts, whose first instruction branches to itself: a kernel that hangs.
HANGING_IMAGE = struct.pack("<IIQQQQQQII", 0x14000000, 0, 0, 0x10000, 0, 0, 0, 0, 0x644D5241, 0).ljust(0x10000, b"\0")


@pytest.mark.labgrid
@pytest.mark.parametrize(
    "corrupt, how, console",
    [
        (lambda data: bytes(len(data)), "rebooted", "its console said: Bad Linux ARM64 Image magic"),  # the script resets
        (panicking, "rebooted", r"its console said: \[ *[\d.]+\] Kernel panic - not syncing: No working init found"),
        (
            lambda data: HANGING_IMAGE,
            r"hung \(its console's last lines then: .*Starting kernel \.\.\.\), so it was power-cycled \(.*labgrid-client",
            "its console's last lines: ",  # the stock kernel's boot, printed since
        ),
    ],
    ids=["a kernel U-Boot refuses", "a kernel that panics", "a kernel that hangs"],
)
def test_a_kernel_that_does_not_come_up_leaves_the_board_on_its_stock_kernel_by_itself(
    uboot_board, uboot_build, qemu_build, tmp_path, corrupt, how, console
):
    """Through a labgrid place, as a lab shares the board: its NetworkService, its serial console (QEMU's,
    over TCP) read while it reboots, its power switch an HTTP relay that resets QEMU through QMP."""
    from labgrid_lab import PLACE, Lab

    from crossboard.board.schema import LabgridPlace
    from crossboard.remote.places import reserved

    stock_conf = _on_board(uboot_board, f"cat {CONF}").stdout
    board = _board_with_broken_kernel(uboot_board, uboot_build, tmp_path / "out", corrupt)
    serial = qemu.console_url(uboot_board).removeprefix("socket://")
    lab = Lab(tmp_path, uboot_board.port, "debian", console=serial, power_on=lambda: qemu.reset(uboot_board))
    spec = board.spec
    in_place = dataclasses.replace(
        board,
        spec=spec.model_copy(
            update={
                "connection": spec.connection.model_copy(
                    update={"host": None, "labgrid": LabgridPlace(place=PLACE, coordinator=lab.coordinator)}
                ),
                "deploy": spec.deploy.model_copy(update={"power_cycle": None, "console": "the place's serial port"}),
            }
        ),
    )
    try:
        with reserved([in_place], echo=False) as (reached,), pytest.raises(StepFailed) as failed:
            install_kernel(reached, tmp_path / "out", Access(uboot_board.settings.known_hosts), reboot=True)
    finally:
        lab.stop()
    message = str(failed.value)
    expected = (
        rf"{uboot_build.kernel_release} did not come up \({how}.*\); the board is back on {qemu_build.kernel_release} by itself"
    )
    assert re.search(expected, message), message
    assert re.search(console, message) and message.endswith(f"(all of it: {tmp_path / 'out' / board.name / REBOOT_LOG})")
    assert _on_board(uboot_board, "uname -r").stdout.strip() == qemu_build.kernel_release
    _back_on_stock(uboot_board, stock_conf)


def test_the_toolchain_matrix_offers_linux_7_3_only_to_the_profile_that_holds_it(uboot_build, docker, backports_image):
    result = invoke("build", "--board", "qemu-arm64-uboot", "--toolchain", "all", "--quiet", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[-2:]}
    assert "not offered: toolchain profile trixie does not hold linux-source-7.3" in rows["trixie"]
    backports = rows["trixie-backports"]
    rustc, bindgen, llvm = (held_version(docker, backports_image.ref, name) for name in ("rustc", "bindgen", "llvm-21"))
    assert f"rustc {rustc}, bindgen {bindgen}, llvm {llvm}" in backports and f"built: {uboot_build.kernel_release}" in backports


def test_hello_rust_built_against_the_7_3_bundle_alone_is_the_full_trees_and_another_rustc_is_refused(
    uboot_build, settings, tmp_path, docker, backports_image, toolchain_image
):
    bundle = uboot_build.out_dir / f"kernel-devel-{uboot_build.kernel_release}.tar.gz"
    boards = copy_project(tmp_path)
    elsewhere = dataclasses.replace(settings, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    overrides = {"kernel": {"source": {"devel": str(bundle)}}, "apps": []}
    manifest = build(load_board("qemu-arm64-uboot", boards, overrides=overrides), elsewhere, QUIET)
    built = (manifest.out_dir / "modules/hello_rust.ko").read_bytes()
    assert built == (uboot_build.out_dir / "modules/hello_rust.ko").read_bytes()
    with pytest.raises(UserError) as refused:
        build(load_board("qemu-arm64-uboot", boards, overrides=overrides | {"toolchain": "trixie"}), elsewhere, QUIET)
    built_with, this_one = held_version(docker, backports_image.ref, "rustc"), held_version(docker, toolchain_image.ref, "rustc")
    assert f"was built with rustc {built_with}" in str(refused.value) and f"this build has rustc {this_one}" in str(refused.value)
    assert str(refused.value).endswith("build with --toolchain trixie-backports")
