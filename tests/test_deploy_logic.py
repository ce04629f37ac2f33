"""Deploy and kernel-install decisions against fake boards (tests/fake_ssh.py): what is loaded, refused,
reloaded or reported, in seconds and without sshd or root. The same flows run against real OpenSSH
servers in test_deploy.py and on the virtual boards."""

import gzip
import json

import pytest
from fake_ssh import FakeAccess, FakeBoard
from fakes import fake_built_board

from crossboard.deploy.run import DeployOptions, deploy_many
from crossboard.errors import StepFailed, UserError

pytestmark = pytest.mark.fast
RELEASE = "6.12.107-crossboard"
REMOTE = "/home/debian/crossboard"
QUIET = DeployOptions(echo=False, wait_seconds=0)


@pytest.fixture
def built(tmp_path):
    key = tmp_path / "key"
    key.write_text("not used: the fake board takes no key\n")

    def make(name="play", module_release=RELEASE, **more):
        return fake_built_board(tmp_path / "project", tmp_path / "out", name, 22, "debian", key, REMOTE, module_release, **more)

    make.out = tmp_path / "out"
    return make


def deploy(built, boards: dict, options=QUIET):
    loaded = [built(name) for name in boards]
    return deploy_many(loaded, built.out, options, FakeAccess(built.out / "known_hosts", boards=boards))


def test_modules_are_loaded_checked_and_unloaded_and_the_app_runs(built):
    board = FakeBoard()
    report = deploy(built, {"play": board})[0]
    assert report["ok"], report
    assert sorted(report["sent"]) == ["apps/hello", "modules/rust_minimal.ko"]
    module = report["modules"][0]
    assert module["loaded"] and module["unloaded"] and module["load_messages"][-1].endswith("rust_minimal: init")
    assert report["apps"][0]["stdout"] == "Hello, lab! from aarch64\n"
    assert board.loaded == set() and board.files[f"{REMOTE}/apps/hello"].startswith(b"#!/bin/sh")
    again = deploy(built, {"play": board})[0]
    assert again["ok"] and again["sent"] == []  # the hashes on the board match: nothing goes twice


@pytest.mark.parametrize(
    "board, refusal",
    [
        (FakeBoard(release="6.12.107-other"), "built for 6.12.107-crossboard but the board runs 6.12.107-other"),
        (FakeBoard(rust=False), "has no CONFIG_RUST"),
    ],
)
def test_a_module_the_running_kernel_cannot_take_is_refused_before_insmod(built, board, refusal):
    with pytest.raises(StepFailed, match="deploy failed on 1 of 1 boards: play"):
        deploy(built, {"play": board})
    report = json.loads((built.out / "play/deploy.json").read_text())
    assert refusal in report["modules"][0]["refused"]
    assert not any("insmod" in command for command in board.commands)


def test_a_module_the_board_loaded_itself_is_never_unloaded_and_ours_is_reloaded(built):
    theirs = FakeBoard(loaded={"rust_minimal"})
    with pytest.raises(StepFailed):
        deploy(built, {"play": theirs})
    report = json.loads((built.out / "play/deploy.json").read_text())
    assert report["modules"][0]["refused"].startswith("a module named rust_minimal is loaded and crossboard did not")
    assert theirs.loaded == {"rust_minimal"} and not any(c.startswith("rmmod") for c in theirs.commands)
    ours = FakeBoard(loaded={"rust_minimal"}, ours={"rust_minimal"})
    report = deploy(built, {"play": ours}, DeployOptions(echo=False, keep_loaded=True))[0]
    assert report["ok"] and report["modules"][0]["load_messages"][:2] == [
        "[ 1.0] rust_minimal: exit",
        "[ 1.0] rust_minimal: init",
    ]


@pytest.mark.parametrize(
    "sudo, message",
    [
        ("missing", "sudo is not installed on the board: install it, or log in as root"),
        ("password", "debian cannot run sudo without a password"),
    ],
)
def test_sudo_that_is_missing_or_wants_a_password_is_said_as_such(built, sudo, message):
    with pytest.raises(UserError):  # the board's setup, which the user fixes: exit 2, as the README says
        deploy(built, {"play": FakeBoard(sudo=sudo)})
    report = json.loads((built.out / "play/deploy.json").read_text())
    assert message in report["error"] and report["modules"] == []


def test_a_board_that_drops_mid_deploy_gets_a_report_and_the_others_go_on(built, capsys):
    dropping, fine = FakeBoard(drop_after=1), FakeBoard()
    with pytest.raises(StepFailed, match="deploy failed on 1 of 2 boards: drops"):
        deploy(built, {"drops": dropping, "fine": fine}, DeployOptions(wait_seconds=0))
    dropped = json.loads((built.out / "drops/deploy.json").read_text())
    assert dropped["error"].startswith("127.0.0.1: the connection was lost") and dropped["reached"]
    assert json.loads((built.out / "fine/deploy.json").read_text())["ok"]
    summary = capsys.readouterr().out
    assert "drops            FAILED" in summary and "fine             ok" in summary


def _built_with(built, **fields):
    """The board `play`, built, its manifest then given `fields`."""
    play = built("play")
    manifest_file = built.out / "play/manifest.json"
    manifest_file.write_text(json.dumps({**json.loads(manifest_file.read_text()), **fields}))
    return play


def test_an_app_needing_a_newer_glibc_than_the_board_has_is_refused(built):
    play = _built_with(built, app_glibc={"hello": "2.99"})
    board = FakeBoard(glibc="2.36")
    with pytest.raises(StepFailed):
        deploy_many([play], built.out, QUIET, FakeAccess(built.out / "k", boards={"play": board}))
    report = json.loads((built.out / "play/deploy.json").read_text())
    assert "needs GLIBC_2.99 but the board has glibc 2.36" in report["apps"][0]["refused"]
    assert report["modules"][0]["ok"] and not any(" timeout " in command for command in board.commands)


def test_a_board_never_built_is_reported_without_touching_it(built):
    board = FakeBoard()
    play = built("play")
    (built.out / "play/manifest.json").unlink()
    with pytest.raises(UserError):
        deploy_many([play], built.out, QUIET, FakeAccess(built.out / "k", boards={"play": board}))
    assert "no build for play" in json.loads((built.out / "play/deploy.json").read_text())["error"]
    assert board.commands == []


KERNEL = "6.12.107-crossboard-play"
CONF = "/boot/firmware/extlinux/extlinux.conf"
RECORD = "/boot/firmware/crossboard/installed.json"


@pytest.fixture
def boot(built):
    """A built kernel and a fake board whose boot partition holds the stock BeaglePlay extlinux.conf."""
    from pathlib import Path

    play = built("play", boot_partition="/boot/firmware", kernel_release=KERNEL)
    stock = (Path(__file__).parent / "data/beagleplay-extlinux.conf").read_bytes()
    board = FakeBoard(release="6.12.43-ti-arm64-r54", files={CONF: stock})
    return play, board, FakeAccess(built.out / "k", boards={"play": board})


def _script(board: FakeBoard, what: str) -> list[str]:
    return next(command for command in board.commands if command.startswith("set -e") and what in command).splitlines()


def test_a_kernel_install_records_itself_before_it_changes_the_boot_menu(boot, built):
    from crossboard.deploy.kernel_install import install_kernel

    play, board, access = boot
    record = install_kernel(play, built.out, access)
    assert record["previous_default"] == "Linux microSD" and record["previous_release"] == "6.12.43-ti-arm64-r54"
    script = _script(board, "tar -xzf")
    stage = f"{REMOTE}/kernel-{KERNEL}"
    first_record = script.index(f"mv -f {RECORD}.new {RECORD}")
    menu = script.index(f"mv -f {CONF}.crossboard-new {CONF}")
    assert script[first_record - 1] == "sync" and script[first_record + 1] == "sync" and first_record < menu
    assert json.loads(board.files[f"{stage}/installing.json"])["state"] == "installing"
    assert json.loads(board.files[f"{stage}/installed.json"])["state"] == "installed"
    assert script.index(f"cp {stage}/installed.json {RECORD}.new") > menu  # "installed" only at the end
    new_menu = board.files[f"{stage}/extlinux.conf"].decode()
    assert f"default crossboard-{KERNEL}" in new_menu and "label Linux microSD" in new_menu
    # the stock kernel is Image.gz, so ours goes compressed too; the drivers are built in: no initrd line
    ours = new_menu.split(f"\nlabel crossboard-{KERNEL}\n")[1].split("\nlabel ")[0]
    assert f"linux /crossboard/{KERNEL}/Image.gz" in ours and "initrd" not in ours
    assert gzip.decompress(board.files[f"{stage}/Image.gz"]).startswith(b"ARMd fake kernel image")
    assert record["initrd"].startswith("none: the drivers the root needs are built in")


def test_a_kernel_install_never_overwrites_modules_it_did_not_install(boot, built):
    from crossboard.deploy.kernel_install import install_kernel

    play, board, access = boot
    board.files[f"/lib/modules/{KERNEL}/modules.dep"] = b""
    with pytest.raises(UserError, match=rf"/lib/modules/{KERNEL} is already there and is not crossboard's"):
        install_kernel(play, built.out, access)
    assert not any(command.startswith("set -e") for command in board.commands)


def test_rollback_removes_the_release_s_own_paths_whatever_the_record_names(boot, built):
    from crossboard.deploy.kernel_install import rollback

    play, board, access = boot
    record = {
        "release": KERNEL,
        "label": f"crossboard-{KERNEL}",
        "previous_default": "Linux microSD",
        "previous_release": "6.12.43-ti-arm64-r54",
        "kernel_dir": "/etc",
        "modules_dir": "/home",
    }
    board.files[RECORD] = json.dumps(record).encode()
    board.files[CONF] = board.files[CONF].replace(b"default Linux microSD", f"default crossboard-{KERNEL}".encode()) + (
        f"\nlabel crossboard-{KERNEL}\n    kernel /crossboard/{KERNEL}/Image\n".encode()
    )
    rollback(play, access)
    removal = next(line for line in _script(board, "rm -rf") if line.startswith("rm -rf"))
    assert removal == f"rm -rf /boot/firmware/crossboard/{KERNEL} /lib/modules/{KERNEL}"
    restored = board.files[f"{REMOTE}/rollback/extlinux.conf"].decode()
    assert "default Linux microSD" in restored and f"crossboard-{KERNEL}" not in restored


def test_an_install_beside_another_crossboard_kernel_is_refused(boot, built):
    from crossboard.deploy.kernel_install import install_kernel

    play, board, access = boot
    other = {"release": "6.12.1-x", "label": "crossboard-6.12.1-x", "previous_default": "Linux microSD", "previous_release": "y"}
    board.files[RECORD] = json.dumps(other).encode()
    with pytest.raises(UserError, match="crossboard's kernel 6.12.1-x is installed: run invoke rollback --board play first"):
        install_kernel(play, built.out, access)


OURS, THEIRS = "ab" * 20, "cd" * 20


@pytest.mark.parametrize(
    "builds, board_build, refused",
    [
        ({"kernel_build_id": OURS}, OURS, False),
        ({"kernel_build_id": OURS}, THEIRS, True),
        ({"kernel_build_id": OURS, "pulled_build_id": THEIRS}, THEIRS, False),  # built on the board's own config
        ({"kernel_build_id": OURS}, "", False),  # the board shows no build ID: the release check alone
    ],
    ids=["the same build", "another build of the release", "pulled from that build", "no notes"],
)
def test_a_module_is_loaded_only_on_the_kernel_build_it_was_built_for(built, builds, board_build, refused):
    play = _built_with(built, **builds)
    board = FakeBoard(build_id=board_build)
    access = FakeAccess(built.out / "k", boards={"play": board})
    if refused:
        with pytest.raises(StepFailed):
            deploy_many([play], built.out, QUIET, access)
    else:
        deploy_many([play], built.out, QUIET, access)
    report = json.loads((built.out / "play/deploy.json").read_text())
    assert report["board_kernel_build"] == board_build
    refusal = report["modules"][0].get("refused", "")
    assert bool(refusal) == refused
    if refused:
        assert refusal.startswith(
            f"rust_minimal was built for kernel build {OURS[:12]} of {RELEASE} but the board runs build {THEIRS[:12]}"
        )
        assert not any("insmod" in command for command in board.commands)


@pytest.fixture
def trying(built):
    """A kernel whose modules are for it, the board with a 1 s reboot timeout and no power control."""
    import dataclasses
    from pathlib import Path

    play = built("play", module_release=KERNEL, boot_partition="/boot/firmware", kernel_release=KERNEL)
    deploy = play.spec.deploy.model_copy(update={"reboot_timeout": 1})
    play = dataclasses.replace(play, spec=play.spec.model_copy(update={"deploy": deploy}))
    stock = (Path(__file__).parent / "data/beagleplay-extlinux.conf").read_bytes()
    mounts = b"/dev/mmcblk1p2 / ext4 rw 0 0\n/dev/mmcblk1p1 /boot/firmware vfat rw 0 0\n"
    board = FakeBoard(release="6.12.43-ti-arm64-r54", files={CONF: stock, "/proc/mounts": mounts})
    return play, board, FakeAccess(built.out / "k", boards={"play": board})


def test_try_once_is_refused_on_a_boot_partition_u_boot_cannot_write(trying, built):
    from crossboard.deploy.kernel_install import install_kernel

    play, board, access = trying
    board.files["/proc/mounts"] = b"/dev/mmcblk1p2 / ext4 rw 0 0\n/dev/mmcblk1p1 /boot/firmware ext4 rw 0 0\n"
    with pytest.raises(UserError, match=r"/boot/firmware is ext4, not FAT: .*try_once: false"):
        install_kernel(play, built.out, access, reboot=True)
    assert not any(command.startswith("set -e") for command in board.commands)


def test_a_try_once_install_puts_the_boot_script_in_place_before_it_moves_the_menu_aside(trying, built):
    from crossboard.deploy.kernel_install import install_kernel

    play, board, access = trying
    board.reboots_into = [KERNEL]
    record = install_kernel(play, built.out, access, reboot=True)
    assert record["state"] == "installed" and record["tried"] == "rebooted"
    script = _script(board, "tar -xzf")
    assert script.index("mv -f /boot/firmware/boot.scr.new /boot/firmware/boot.scr") < script.index(
        f"mv -f {CONF} {CONF}.crossboard-try"
    )
    assert script[-2] == f"mv -f {RECORD}.new {RECORD}" and f"cp {REMOTE}/kernel-{KERNEL}/trying.json {RECORD}.new" in script
    # committed only after the board came up on it and the build's module loaded there
    assert any(command.startswith("insmod") or "insmod" in command for command in board.commands)
    commit = _script(board, "crossboard-new")
    assert f"mv -f {CONF}.crossboard-new {CONF}" in commit and f"rm -f {CONF}.crossboard-try" in commit
    staged = board.files[f"{REMOTE}/kernel-{KERNEL}/boot.scr"]
    assert b"fatrm ${devtype} ${devnum}:${distro_bootpart} /boot.scr" in staged and b"panic=10" in staged


def test_a_try_that_comes_back_on_the_stock_kernel_is_reported_and_taken_away(trying, built):
    from crossboard.deploy.kernel_install import install_kernel

    play, board, access = trying
    board.reboots_into = ["6.12.43-ti-arm64-r54"]
    with pytest.raises(StepFailed, match=rf"{KERNEL} did not come up \(rebooted, .*back on 6.12.43-ti-arm64-r54 by itself"):
        install_kernel(play, built.out, access, reboot=True)
    removal = next(line for line in _script(board, "rm -rf") if line.startswith("rm -rf"))
    assert removal == f"rm -rf /boot/firmware/crossboard/{KERNEL} /lib/modules/{KERNEL}"
    assert board.files[CONF] == board.files[f"{REMOTE}/rollback/extlinux.conf"] and b"crossboard-" not in board.files[CONF]
    assert RECORD not in board.files and f"{CONF}.crossboard-try" not in board.files


def test_a_try_that_hangs_on_a_board_without_power_control_says_what_to_do(trying, built):
    from crossboard.deploy.kernel_install import install_kernel

    play, board, access = trying
    board.reboots_into = [None]
    with pytest.raises(StepFailed, match=r"did not come up within 1 s; the try was once, so the board's next power cycle boots"):
        install_kernel(play, built.out, access, reboot=True)


def test_the_boot_script_is_an_image_u_boot_sources():
    import struct
    import zlib

    from crossboard.deploy.try_once import script_image, script_text

    text = script_text("/extlinux/extlinux.conf", "/crossboard/6.12/Image", 'console=ttyS2 quiet="x"', None)
    assert text.index("fatwrite") < text.index("fatrm") < text.index("booti")  # the menu is back before the try
    assert 'setenv bootargs "console=ttyS2 quiet=x panic=10"' in text
    image = script_image(text)
    magic, header_crc, _, size, _, _, data_crc, _, _, kind, _ = struct.unpack(">IIIIIIIBBBB", image[:32])
    assert (magic, kind, size) == (0x27051956, 6, len(image) - 64)
    assert header_crc == zlib.crc32(image[:4] + b"\0\0\0\0" + image[8:64]) and data_crc == zlib.crc32(image[64:])
    assert struct.unpack(">II", image[64:72]) == (len(text.encode()), 0) and image[72:] == text.encode()


def _with_initramfs(play):
    import dataclasses

    kernel = play.spec.kernel.model_copy(update={"boot": "initramfs"})
    return dataclasses.replace(play, spec=play.spec.model_copy(update={"kernel": kernel}))


def test_a_kernel_that_needs_an_initramfs_gets_one_made_on_the_board_for_its_release(trying, built):
    from crossboard.deploy.kernel_install import install_kernel

    play, board, access = trying
    board.reboots_into = [KERNEL]
    record = install_kernel(_with_initramfs(play), built.out, access, reboot=True)
    initrd = f"/crossboard/{KERNEL}/initrd.img"
    assert record["initrd"] == f"{initrd}: made on the board by mkinitramfs for {KERNEL}"
    script = _script(board, "tar -xzf")
    assert f"mkinitramfs -o /boot/firmware{initrd} {KERNEL}" in script
    depmod = next(i for i, line in enumerate(script) if "depmod -a" in line)
    assert script.index(f"mkinitramfs -o /boot/firmware{initrd} {KERNEL}") == depmod + 1
    ours = board.files[CONF].decode().split(f"\nlabel crossboard-{KERNEL}\n")[1].split("\nlabel ")[0]
    assert f"initrd {initrd}" in ours
    staged = board.files[f"{REMOTE}/kernel-{KERNEL}/boot.scr"]
    assert f"load ${{devtype}} ${{devnum}}:${{distro_bootpart}} ${{ramdisk_addr_r}} {initrd}".encode() in staged


def test_a_kernel_that_needs_an_initramfs_is_refused_where_none_can_be_made(trying, built):
    from crossboard.deploy.kernel_install import install_kernel

    play, board, access = trying
    board.missing = {"mkinitramfs"}
    with pytest.raises(UserError, match="needs initramfs-tools' mkinitramfs on the board"):
        install_kernel(_with_initramfs(play), built.out, access, reboot=True)
    assert not any(command.startswith("set -e") for command in board.commands)


def test_the_boot_script_boots_the_stock_menu_when_it_cannot_put_it_back():
    from crossboard.deploy.try_once import script_text

    text = script_text("/extlinux/extlinux.conf", "/crossboard/6.12/Image", "console=ttyS2", None)
    last = text.strip().splitlines()[-1]
    assert last == "sysboot ${devtype} ${devnum}:${distro_bootpart} any ${pxefile_addr_r} /extlinux/extlinux.conf.crossboard-try"
    assert text.index("fi\n") < text.index("sysboot")  # only when the restore failed: a try boots or resets first


def test_the_boot_script_tries_the_kernel_only_once_it_removed_itself():
    from crossboard.deploy.try_once import script_text

    text = script_text("/extlinux/extlinux.conf", "/crossboard/6.12/Image", "console=ttyS2", None)
    guarded = text.index("if fatrm ${devtype} ${devnum}:${distro_bootpart} /boot.scr; then")
    gave_up = text.index("echo crossboard: could not remove /boot.scr, so /crossboard/6.12/Image is not tried")
    assert guarded < text.index("booti") < gave_up  # a boot.scr that stays would try the kernel at every boot
    after = text[gave_up:].splitlines()[1]
    assert after == "  sysboot ${devtype} ${devnum}:${distro_bootpart} any ${pxefile_addr_r} /extlinux/extlinux.conf"


@pytest.mark.parametrize(
    "dtb", ["/crossboard/6.12/k3.dtb; setenv bootcmd 'echo owned'; saveenv; echo", "/crossboard/6.12/my dtb.dtb"]
)
def test_a_name_with_a_command_or_a_space_never_reaches_the_boot_script(dtb):
    from crossboard.deploy.try_once import script_text

    with pytest.raises(UserError, match="would reach U-Boot, which takes only plain paths"):
        script_text("/extlinux/extlinux.conf", "/crossboard/6.12/Image", "console=ttyS2", dtb)


def _suite(name: str, *cases: str) -> list[str]:
    """KUnit's KTAP for one suite, as the kernel logs it; a case `x!` fails."""
    lines = ["KTAP version 1", "1..1", "    KTAP version 1", f"    # Subtest: {name}", f"    1..{len(cases)}"]
    lines += [f"    {'not ok' if case.endswith('!') else 'ok'} {i} {case.rstrip('!')}" for i, case in enumerate(cases, 1)]
    return lines + [f"{'not ok' if any(c.endswith('!') for c in cases) else 'ok'} 1 {name}"]


def test_kunit_results_from_boot_and_from_a_module_load_are_reported_and_a_failed_test_fails_the_deploy(built, capsys):
    passing = FakeBoard(
        kmsg=_suite("rust_doctests_kernel", "doc_0", "doc_1"), load_lines={"rust_minimal": _suite("rust_minimal", "adds")}
    )
    report = deploy(built, {"play": passing}, DeployOptions(wait_seconds=0))[0]
    assert report["ok"], report
    assert [(t["suite"], t["test"], t["status"]) for t in report["boot_tests"]] == [
        ("rust_doctests_kernel", "doc_0", "ok"),
        ("rust_doctests_kernel", "doc_1", "ok"),
    ]
    assert report["modules"][0]["tests"] == [{"suite": "rust_minimal", "test": "adds", "status": "ok", "reason": ""}]
    table = capsys.readouterr().out.splitlines()
    assert [line.split() for line in table if "rust_doctests_kernel" in line or "kunit suite" in line] == [
        ["kunit", "suite", "ok", "failed", "skipped"],
        ["rust_doctests_kernel", "2", "0", "0"],
    ]

    failing = FakeBoard(load_lines={"rust_minimal": _suite("rust_minimal", "adds", "greets!")})
    with pytest.raises(StepFailed, match="deploy failed on 1 of 1 boards: play"):
        deploy(built, {"play": failing}, DeployOptions(wait_seconds=0))
    report = json.loads((built.out / "play/deploy.json").read_text())
    assert [(t["test"], t["status"]) for t in report["modules"][0]["tests"]] == [("adds", "ok"), ("greets", "failed")]
    assert not report["ok"] and not report["modules"][0]["ok"] and report["modules"][0]["loaded"]
    assert "  FAILED rust_minimal.greets" in capsys.readouterr().out.splitlines()


def test_boards_that_failed_in_different_ways_exit_as_a_failed_step(built):
    play, other = built("play"), built("other")
    (built.out / "other/manifest.json").unlink()  # bad input there, a refused app on play
    manifest_file = built.out / "play/manifest.json"
    manifest_file.write_text(json.dumps({**json.loads(manifest_file.read_text()), "app_glibc": {"hello": "2.99"}}))
    boards = {"play": FakeBoard(glibc="2.36"), "other": FakeBoard()}
    with pytest.raises(StepFailed, match="deploy failed on 2 of 2 boards"):
        deploy_many([play, other], built.out, QUIET, FakeAccess(built.out / "k", boards=boards))
