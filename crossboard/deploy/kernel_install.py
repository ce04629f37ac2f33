"""`invoke deploy --kernel` and `invoke rollback`: our kernel on the board's boot partition under its own
names, a new default extlinux label beside the stock ones, and a record on the board of what was
installed so that rollback can take it all away again."""

from __future__ import annotations

import gzip
import json
import re
import shlex
import time
from pathlib import Path

from ..artifacts.files import sha256_of
from ..artifacts.manifest import finished_build
from ..board.load import LoadedBoard
from ..errors import StepFailed, UserError
from ..remote.access import Access
from ..remote.connection import Session
from ..remote.console import REBOOT_LOG, console_hint, reading_console
from ..remote.transfer import Upload, push
from . import extlinux
from . import try_once as try_once_script
from .reboot import power_cycle, reboot_into, start_reboot, wait_for_new_boot

RECORD = "crossboard/installed.json"  # on the boot partition, beside the kernels
# A kernel release is one plain name: it becomes folder names and an extlinux label.
RELEASE = re.compile(r"^[A-Za-z0-9._+-]+$")


def _checked_release(release: object, where: str) -> str:
    if not isinstance(release, str) or not RELEASE.match(release) or release in (".", ".."):
        raise UserError(f"{where}: the kernel release {release!r} is not a plain name ([A-Za-z0-9._+-]); nothing was changed")
    return release


def _places(partition: str, release: str) -> tuple[str, str]:
    """Where a release's kernel and modules go: the only paths install writes and rollback removes."""
    return f"{partition}/crossboard/{release}", f"/lib/modules/{release}"


def _load_record(text: str, where: str) -> dict:
    """The board's record of what crossboard installed, checked before anything trusts it."""
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict) or not all(
        isinstance(record.get(key), str) for key in ("release", "label", "previous_default", "previous_release")
    ):
        raise UserError(f"{where}: not a record crossboard wrote (damaged or edited); nothing was changed")
    if record["label"] != f"crossboard-{_checked_release(record['release'], where)}":
        raise UserError(f"{where}: label {record['label']!r} is not crossboard's for {record['release']}; nothing was changed")
    if any(ch in record["previous_default"] for ch in "\n\r\0"):
        raise UserError(f"{where}: previous_default is not one line; nothing was changed")
    return record


def _boot(board: LoadedBoard):
    boot = board.spec.deploy.boot
    if boot is None:
        raise UserError(f"{board.file.name}: deploy.boot is not set: {board.name} has no boot partition to install into")
    return boot.partition, f"{boot.partition}/{boot.extlinux}"


def _read(remote: Session, path: str) -> str | None:
    result = remote.run(f"cat {shlex.quote(path)}", privileged=True)
    return result.stdout if result.code == 0 else None


def _stage_files(remote: Session, stage: str, files: dict[str, Path | bytes]) -> None:
    """Send files (local paths, or contents) into the staging folder, checked and atomic as every transfer."""
    push(
        remote,
        stage,
        [
            Upload.of_bytes(name, content) if isinstance(content, bytes) else Upload(content, name, sha256_of(content))
            for name, content in files.items()
        ],
    )


def _run_script(remote: Session, script: str, what: str) -> None:
    result = remote.run(f"set -e\n{script}", privileged=True)
    if result.code != 0:
        raise StepFailed(f"{remote.target.name}: {what} failed (exit {result.code}): {' '.join(result.stderr.split())}")


def install_kernel(board: LoadedBoard, out_root: Path, access: Access, reboot: bool = False) -> dict:
    """Install the built kernel, DTBs and modules. Without `reboot`, the new label becomes the default.
    With `reboot` and deploy.boot.try_once, it is booted once (try_once.py) and becomes the default only
    after it came up and the build's modules and apps passed on it; without try_once, it becomes the
    default, is booted and checked."""
    partition, conf = _boot(board)
    try_once = reboot and board.spec.deploy.boot is not None and board.spec.deploy.boot.try_once
    out_dir = board.out_dir(out_root)
    built = finished_build(out_dir, board.name)
    release = _checked_release(built.kernel_release, str(out_dir / "manifest.json"))
    kernel, modules_tree, dtbs = built.one("kernel"), built.one("modules-tree"), built.of_kind("dtb")
    if kernel is None or modules_tree is None:
        raise UserError(
            f"{out_dir}: the build has no kernel image or modules tree (a build against a devel bundle has neither): "
            f"run invoke build --board {board.name} on a kernel source"
        )
    label, (dest, modules_dir) = f"crossboard-{release}", _places(partition, release)
    # the initrd is decided, never copied from the stock label: that one holds another kernel's modules
    initrd = f"/crossboard/{release}/initrd.img" if board.spec.kernel.boot == "initramfs" else None
    with access.open(board) as remote:
        earlier_text = _read(remote, f"{partition}/{RECORD}")
        earlier = _load_record(earlier_text, f"{board.name}:{partition}/{RECORD}") if earlier_text else None
        if earlier and earlier["release"] != release:
            raise UserError(
                f"{board.name}: crossboard's kernel {earlier['release']} is installed: "
                f"run invoke rollback --board {board.name} first"
            )
        if not earlier and remote.run(f"test -e /lib/modules/{shlex.quote(release)}").code == 0:
            raise UserError(
                f"{board.name}: /lib/modules/{release} is already there and is not crossboard's: give "
                "the build its own kernel.localversion, or installing would overwrite that kernel's modules"
            )
        current = _read(remote, conf)
        if current is None:
            raise UserError(f"{board.name}: cannot read {conf} on the board (deploy.boot)")
        if initrd and remote.run("command -v mkinitramfs").code != 0:
            raise UserError(
                f"{board.name}: kernel.boot: initramfs needs initramfs-tools' mkinitramfs on the board to make an "
                f"initramfs for {release}; install it there, or build the root's drivers in (kernel.boot: "
                "built-in-drivers); nothing was changed"
            )
        try:
            # compressed as the board's stock kernel is: its U-Boot is set up to unpack that
            compress = extlinux.default_kernel(current).endswith(".gz") and not kernel.file_name.endswith(".gz")
            image_name = kernel.file_name + (".gz" if compress else "")
            # where U-Boot finds them, on the boot partition
            kernel_path = f"/crossboard/{release}/{image_name}"
            fdt_path = f"/crossboard/{release}/{dtbs[0].file_name}" if dtbs else None
            for path in (kernel_path, fdt_path, initrd, conf.removeprefix(partition)):
                try_once_script.check_boot_path(path, board.name)
            new_conf, stock_default = extlinux.add_default_label(current, label, kernel_path, fdt_path, initrd)
        except ValueError as reason:
            raise UserError(f"{board.name}: {conf} is not usable ({reason}); nothing was changed") from None
        if try_once:
            _check_try_once_possible(board, remote, partition)
        record = {
            "release": release,
            "label": label,
            "state": "installing",
            "kernel_dir": dest,
            "modules_dir": modules_dir,
            "previous_default": earlier["previous_default"] if earlier else stock_default,
            "previous_release": earlier["previous_release"] if earlier else remote.run("uname -r").stdout.strip(),
            "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kernel": kernel_path,
            "initrd": f"{initrd}: made on the board by mkinitramfs for {release}"
            if initrd
            else "none: the drivers the root needs are built in (kernel.boot: built-in-drivers)",
        }
        stage = f"{board.spec.deploy.remote_dir}/kernel-{release}"
        files: dict[str, Path | bytes] = {
            image_name: gzip.compress(built.local(kernel).read_bytes(), 9, mtime=0) if compress else built.local(kernel),
            "modules.tar.gz": built.local(modules_tree),
            "extlinux.conf": new_conf.encode(),
            "installing.json": json.dumps(record, indent=2).encode(),
            "installed.json": json.dumps({**record, "state": "installed"}, indent=2).encode(),
        }
        if try_once:
            files["trying.json"] = json.dumps({**record, "state": "trying"}, indent=2).encode()
            files[try_once_script.SCRIPT] = try_once_script.script_image(
                try_once_script.script_text(
                    conf.removeprefix(partition), kernel_path, extlinux.append_of(new_conf, label), fdt_path, initrd
                )
            )
        files.update({dtb.file_name: built.local(dtb) for dtb in dtbs})
        _stage_files(remote, stage, files)
        q = shlex.quote
        copies = " ".join(q(f"{stage}/{name}") for name in [image_name, *(dtb.file_name for dtb in dtbs)])
        record_file = f"{partition}/{RECORD}"
        hidden, script = conf + try_once_script.HIDDEN_SUFFIX, f"{partition}/{try_once_script.SCRIPT}"
        # A try: the boot script in place before the menu is moved aside, so the board always has a way to boot.
        finish = (
            f"""
cp {q(stage + "/" + try_once_script.SCRIPT)} {q(script + ".new")}
sync
mv -f {q(script + ".new")} {q(script)}
sync
mv -f {q(conf)} {q(hidden)}
sync{_record_lines(stage + "/trying.json", record_file)}"""
            if try_once
            else _commit_lines(stage, conf, label, record_file)
        )
        make_initrd = f"\nmkinitramfs -o {q(partition + initrd)} {q(release)}" if initrd else ""
        # The record first: whatever fails after it, rollback knows what to undo (and finishes it).
        _run_script(
            remote,
            f"""
mkdir -p {q(dest)}{_record_lines(stage + "/installing.json", record_file)}
cp {copies} {q(dest)}/
tar -xzf {q(stage + "/modules.tar.gz")} -C /
if command -v depmod >/dev/null 2>&1; then depmod -a {q(release)}; fi{make_initrd}
cp -p {q(conf)} {q(conf + ".crossboard-" + time.strftime("%Y%m%d%H%M%S"))}{finish}""",
            "installing the kernel",
        )
    if not reboot:
        return {**record, "state": "installed"}
    if not try_once:
        reboot_into(board, access, release, out_dir / REBOOT_LOG)
        return {**record, "state": "installed"}
    return _try(board, out_root, access, {**record, "state": "trying"}, stage)


def _check_try_once_possible(board: LoadedBoard, remote: Session, partition: str) -> None:
    """The try-once script writes the boot partition from U-Boot with fatwrite: on anything but FAT it
    could not put the menu back, and the board would be left without one. And it is the partition's
    boot.scr: a board's own would be replaced."""
    mounts = [line.split() for line in remote.run("cat /proc/mounts").stdout.splitlines()]
    kind = next((fields[2] for fields in mounts if len(fields) > 2 and fields[1] == partition), None)
    if kind not in ("vfat", "msdos"):
        raise UserError(
            f"{board.name}: {partition} is {kind or 'not a mount point'}, not FAT: the "
            "try-once script needs U-Boot's fatwrite there; set deploy.boot.try_once: false (then a kernel that "
            "does not come up needs the board's console); nothing was changed"
        )
    if remote.run(f"test -e {shlex.quote(partition + '/' + try_once_script.SCRIPT)}").code == 0:
        raise UserError(
            f"{board.name}: {partition}/{try_once_script.SCRIPT} is there and is not crossboard's: a try-once "
            f"install would replace it; set deploy.boot.try_once: false in boards/{board.name}.local.yaml"
        )


def _record_lines(staged: str, record_file: str) -> str:
    """Shell lines that put a staged record in place: copied beside it, then renamed over it, synced
    before and after so that the FAT partition never holds half of one."""
    q = shlex.quote
    return f"""
cp {q(staged)} {q(record_file + ".new")}
sync
mv -f {q(record_file + ".new")} {q(record_file)}
sync"""


def _commit_lines(stage: str, conf: str, label: str, record_file: str) -> str:
    """Shell lines that make the staged extlinux.conf (our label the default) the board's, then put the
    `installed` record in place."""
    q = shlex.quote
    return f"""
cp {q(stage + "/extlinux.conf")} {q(conf + ".crossboard-new")}
grep -q {q("^label " + label + "$")} {q(conf + ".crossboard-new")}
sync
mv -f {q(conf + ".crossboard-new")} {q(conf)}
sync
rm -f {q(conf + try_once_script.HIDDEN_SUFFIX)}{_record_lines(stage + "/installed.json", record_file)}"""


def _try(board: LoadedBoard, out_root: Path, access: Access, record: dict, stage: str) -> dict:
    """Boot the kernel once; commit it as the default when it came up and passed, else say how the board
    came back to its stock kernel and take the new one away again."""
    from .run import DeployOptions, deploy_board

    release, previous, deploy = record["release"], record["previous_release"], board.spec.deploy
    console_log = board.out_dir(out_root) / REBOOT_LOG
    with reading_console(board, console_log) as console:
        before = start_reboot(board, access)
        came_back, how = wait_for_new_boot(board, access, before, deploy.reboot_timeout), "rebooted"
        if came_back is None:
            seen = f" (its console's last lines then: {console.tail()})" if console else ""  # before the cycle
            if not power_cycle(board):
                raise StepFailed(
                    f"{board.name}: {release} did not come up within {deploy.reboot_timeout} s; the try was once, so "
                    f"the board's next power cycle boots its stock kernel {previous}: power-cycle it (deploy.power_cycle "
                    f"does that unattended), then invoke rollback --board {board.name}; {console_hint(board, console)}"
                )
            how = f"hung{seen}, so it was power-cycled ({deploy.power_cycle})"
            came_back = wait_for_new_boot(board, access, before, deploy.reboot_timeout)
            if came_back is None:
                raise StepFailed(f"{board.name}: did not come back after the power cycle either; {console_hint(board, console)}")
    if came_back != release:
        rollback(board, access)
        raise StepFailed(
            f"{board.name}: {release} did not come up ({how}, and U-Boot booted the stock menu); the board is back on "
            f"{came_back} by itself and {release} was removed from it; {console_hint(board, console)}"
        )
    health = deploy_board(board, out_root, DeployOptions(echo=False), access)
    if not health["ok"]:
        failed = health["error"] or ", ".join(e["name"] for e in health["modules"] + health["apps"] if not e["ok"])
        reboot_into(board, access, previous, console_log)  # the menu on the board is the stock one again
        rollback(board, access)
        raise StepFailed(
            f"{board.name}: {release} came up but did not pass ({failed}; see out/{board.name}/deploy.json); "
            f"the board is back on {previous} and {release} was removed from it"
        )
    partition, conf = _boot(board)
    with access.open(board) as remote:
        record_file = f"{partition}/{RECORD}"
        _run_script(remote, _commit_lines(stage, conf, record["label"], record_file), "making the tried kernel the default")
    return {**record, "state": "installed", "tried": how}


def rollback(board: LoadedBoard, access: Access, reboot: bool = False, console_log: Path | None = None) -> dict:
    """Restore the default label from before, and remove what crossboard installed. With `reboot`,
    boot the board again and check it runs the kernel it ran before the install (its console read into
    `console_log`)."""
    partition, conf = _boot(board)
    with access.open(board) as remote:
        text = _read(remote, f"{partition}/{RECORD}")
        if not text:
            raise UserError(f"{board.name}: no crossboard kernel is installed ({partition}/{RECORD} is missing)")
        record = _load_record(text, f"{board.name}:{partition}/{RECORD}")
        kernel_dir, modules_dir = _places(partition, record["release"])  # never paths the record names
        hidden, script = conf + try_once_script.HIDDEN_SUFFIX, f"{partition}/{try_once_script.SCRIPT}"
        current = _read(remote, conf) or _read(remote, hidden)  # a try not yet booted has the menu aside
        try:
            restored = extlinux.remove_label(current or "", record["label"], record["previous_default"])
        except ValueError as reason:
            raise UserError(f"{board.name}: {conf} could not be restored ({reason}); nothing was changed") from None
        stage = f"{board.spec.deploy.remote_dir}/rollback"
        _stage_files(remote, stage, {"extlinux.conf": restored.encode()})
        q = shlex.quote
        _run_script(
            remote,
            f"""
if [ -e {q(conf)} ]; then cp -p {q(conf)} {q(conf + ".crossboard-" + time.strftime("%Y%m%d%H%M%S"))}; fi
cp {q(stage + "/extlinux.conf")} {q(conf + ".crossboard-new")}
sync
mv -f {q(conf + ".crossboard-new")} {q(conf)}
sync
rm -f {q(hidden)}
if grep -q {q(try_once_script.SCRIPT_NAME)} {q(script)} 2>/dev/null; then rm -f {q(script)}; fi
rm -rf {q(kernel_dir)} {q(modules_dir)}
rm -f {q(partition + "/" + RECORD)}
rmdir {q(partition + "/crossboard")} 2>/dev/null || true
sync""",
            "rolling back",
        )
    if reboot:
        reboot_into(board, access, record["previous_release"], console_log)
    return record
