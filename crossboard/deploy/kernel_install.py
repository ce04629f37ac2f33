"""`invoke deploy --kernel` and `invoke rollback`: our kernel on the board's boot partition under its own
names, a new default extlinux label beside the stock ones, and a record on the board of what was
installed so that rollback can take it all away again."""

from __future__ import annotations

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
from ..remote.transfer import Upload, push
from . import extlinux
from .reboot import boot_id, reboot_into

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
    """Install the built kernel, DTBs and modules; the new label becomes the default. With `reboot`,
    boot it and check the board runs it."""
    partition, conf = _boot(board)
    out_dir = out_root / board.name
    built = finished_build(out_dir, board.name)
    release = _checked_release(built.kernel_release, str(out_dir / "manifest.json"))
    kernel, modules_tree, dtbs = built.one("kernel"), built.one("modules-tree"), built.of_kind("dtb")
    if kernel is None or modules_tree is None:
        raise UserError(f"{out_dir}: the build has no kernel image or modules tree: run invoke build --board {board.name}")
    label, (dest, modules_dir) = f"crossboard-{release}", _places(partition, release)
    image_name = kernel.file_name
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
        try:
            new_conf, stock_default = extlinux.add_default_label(
                current,
                label,
                f"/crossboard/{release}/{image_name}",
                f"/crossboard/{release}/{dtbs[0].file_name}" if dtbs else None,
            )
        except ValueError as reason:
            raise UserError(f"{board.name}: {conf} is not usable ({reason}); nothing was changed") from None
        before = boot_id(remote)
        record = {
            "release": release,
            "label": label,
            "state": "installing",
            "kernel_dir": dest,
            "modules_dir": modules_dir,
            "previous_default": earlier["previous_default"] if earlier else stock_default,
            "previous_release": earlier["previous_release"] if earlier else remote.run("uname -r").stdout.strip(),
            "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        stage = f"{board.spec.deploy.remote_dir}/kernel-{release}"
        files: dict[str, Path | bytes] = {
            image_name: built.local(kernel),
            "modules.tar.gz": built.local(modules_tree),
            "extlinux.conf": new_conf.encode(),
            "installing.json": json.dumps(record, indent=2).encode(),
            "installed.json": json.dumps({**record, "state": "installed"}, indent=2).encode(),
        }
        files.update({dtb.file_name: built.local(dtb) for dtb in dtbs})
        _stage_files(remote, stage, files)
        q = shlex.quote
        copies = " ".join(
            q(f"{stage}/{name}")
            for name in files
            if name not in ("modules.tar.gz", "extlinux.conf", "installing.json", "installed.json")
        )
        record_file = f"{partition}/{RECORD}"
        # The record first: whatever fails after it, rollback knows what to undo (and finishes it).
        _run_script(
            remote,
            f"""
mkdir -p {q(dest)}
cp {q(stage + "/installing.json")} {q(record_file + ".new")}
sync
mv -f {q(record_file + ".new")} {q(record_file)}
sync
cp {copies} {q(dest)}/
tar -xzf {q(stage + "/modules.tar.gz")} -C /
if command -v depmod >/dev/null 2>&1; then depmod -a {q(release)}; fi
cp -p {q(conf)} {q(conf + ".crossboard-" + time.strftime("%Y%m%d%H%M%S"))}
cp {q(stage + "/extlinux.conf")} {q(conf + ".crossboard-new")}
grep -q {q("^label " + label + "$")} {q(conf + ".crossboard-new")}
sync
mv -f {q(conf + ".crossboard-new")} {q(conf)}
sync
cp {q(stage + "/installed.json")} {q(record_file + ".new")}
sync
mv -f {q(record_file + ".new")} {q(record_file)}
sync""",
            "installing the kernel",
        )
    if reboot:
        reboot_into(board, access, release, before)
    return record


def rollback(board: LoadedBoard, access: Access, reboot: bool = False) -> dict:
    """Restore the default label from before, and remove what crossboard installed. With `reboot`,
    boot the board again and check it runs the kernel it ran before the install."""
    partition, conf = _boot(board)
    with access.open(board) as remote:
        text = _read(remote, f"{partition}/{RECORD}")
        if not text:
            raise UserError(f"{board.name}: no crossboard kernel is installed ({partition}/{RECORD} is missing)")
        record = _load_record(text, f"{board.name}:{partition}/{RECORD}")
        kernel_dir, modules_dir = _places(partition, record["release"])  # never paths the record names
        current = _read(remote, conf)
        try:
            restored = extlinux.remove_label(current or "", record["label"], record["previous_default"])
        except ValueError as reason:
            raise UserError(f"{board.name}: {conf} could not be restored ({reason}); nothing was changed") from None
        before = boot_id(remote)
        stage = f"{board.spec.deploy.remote_dir}/rollback"
        _stage_files(remote, stage, {"extlinux.conf": restored.encode()})
        q = shlex.quote
        _run_script(
            remote,
            f"""
cp -p {q(conf)} {q(conf + ".crossboard-" + time.strftime("%Y%m%d%H%M%S"))}
cp {q(stage + "/extlinux.conf")} {q(conf + ".crossboard-new")}
sync
mv -f {q(conf + ".crossboard-new")} {q(conf)}
sync
rm -rf {q(kernel_dir)} {q(modules_dir)}
rm -f {q(partition + "/" + RECORD)}
rmdir {q(partition + "/crossboard")} 2>/dev/null || true
sync""",
            "rolling back",
        )
    if reboot:
        reboot_into(board, access, record["previous_release"], before)
    return record
