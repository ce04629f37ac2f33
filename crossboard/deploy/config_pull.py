"""`invoke config.pull`: build against the kernel a board runs. Reads its config and release and
stores them as the board's base config and LOCALVERSION in the untracked local override file."""

from __future__ import annotations

import re
from pathlib import Path

from ruamel.yaml import CommentedMap

from .. import kconfig
from ..artifacts.files import NOTES_AS_HEX, build_id_in_hex_notes, write_atomically
from ..board.edit import edited
from ..board.load import LoadedBoard
from ..errors import UserError
from ..remote.access import Access

SEPARATOR = "@@crossboard-config@@"
PULL_COMMAND = (
    f"uname -r; echo {SEPARATOR}; release=$(uname -r); "
    "if [ -r /proc/config.gz ]; then zcat /proc/config.gz; "
    'elif [ -r "/boot/config-$release" ]; then cat "/boot/config-$release"; fi; '
    f"echo {SEPARATOR}; {NOTES_AS_HEX}"
)
ARM64_RUST_SINCE = (6, 9)


def split_release(release: str) -> tuple[tuple[int, ...], str]:
    """`6.12.43-ti-arm64-r54` -> ((6, 12, 43), "-ti-arm64-r54")."""
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?(.*)$", release)
    if not match:
        raise UserError(f"cannot read a kernel version in the release {release!r}")
    return tuple(int(part or 0) for part in match.groups()[:3]), match[4]


def rust_problem(release: str, config: dict[str, str]) -> str | None:
    """Why modules built against this running kernel could not be Rust modules, or None."""
    version, _ = split_release(release)
    if version[:2] < ARM64_RUST_SINCE:
        return (
            f"the board runs {release}: arm64 Rust needs Linux >= 6.9, so this kernel cannot have "
            "CONFIG_RUST (the 6.6-ti kernel of older BeaglePlay images is one)"
        )
    if config.get("CONFIG_RUST", "n") != "y":
        return (
            f"the board's kernel {release} was built without CONFIG_RUST: Rust modules built against "
            "it would fail to load with 'Unknown symbol __rust_alloc'"
        )
    return None


def pull_config(board: LoadedBoard, access: Access) -> tuple[Path, str]:
    """Store the running kernel's config as boards/<name>.pulled.config and point the local override
    at it with the release's LOCALVERSION; returns the config file and the release."""
    spec = board.spec
    with access.open(board) as remote:
        output = remote.run(PULL_COMMAND).stdout
    release, _, rest = output.partition(f"{SEPARATOR}\n")
    config_text, _, notes = rest.rpartition(f"{SEPARATOR}\n")
    release = release.strip()
    if not config_text.strip():
        raise UserError(
            f"{spec.connection.host}: the running kernel {release} shows no config (it needs "
            "CONFIG_IKCONFIG_PROC for /proc/config.gz, or a /boot/config-<release>)"
        )
    problem = rust_problem(release, kconfig.parse(config_text))
    if problem:
        raise UserError(f"{problem}. Install a Rust-enabled kernel built by crossboard on the board instead")
    _, localversion = split_release(release)
    config_file = board.boards_dir / f"{board.name}.pulled.config"
    local_file = board.boards_dir / f"{board.name}.local.yaml"
    override = pointed_local_override(local_file, config_file.name, localversion)  # refused before anything is written
    # its first line says which kernel build it came from: modules built on it may load on that build
    header = kconfig.pulled_header(build_id_in_hex_notes(notes))
    write_atomically(config_file, (header + config_text).encode())
    write_atomically(local_file, override)
    return config_file, release


def pointed_local_override(local_file: Path, config_name: str, localversion: str) -> bytes:
    """The local override with kernel.config.base and kernel.localversion set, everything else in it kept
    as written: comments, order, and YAML 1.2 meaning (`yes` stays the word yes)."""

    def point(local: CommentedMap) -> None:
        kernel = local.setdefault("kernel", CommentedMap())
        kernel.setdefault("config", CommentedMap())["base"] = f"file:{config_name}"
        kernel["localversion"] = localversion

    return edited(local_file, point)
