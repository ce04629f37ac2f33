"""`invoke new.module` and `invoke new.app`: a working out-of-tree Rust module or cargo app, added to the
board file with what deploy should see, so the next build and deploy load or run it."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from ruamel.yaml import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from .artifacts.files import write_atomically
from .board.edit import edited
from .board.load import LoadedBoard, load_board
from .errors import UserError
from .locking import holding

MODULE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,54}$")  # a C and Rust identifier, and a kernel module name
APP_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")  # a cargo package name
RUST_KEYWORDS = frozenset(
    "as async await break const continue crate dyn else enum extern false fn for gen if impl in let loop match mod move "
    "mut pub ref return self static struct super trait true type unsafe use where while abstract become box do final "
    "macro override priv try typeof unsized virtual yield".split()
)
# a module's name is its crate's: these are the crates a kernel module links with, or the language's own
TAKEN_BY_THE_KERNEL = frozenset("kernel core alloc std macros bindings uapi ffi compiler_builtins build_error pin_init".split())
# what `kernel::prelude::*` brings into a module (Linux 6.12 to 7.x): a module's type may not be one of them
PRELUDE_NAMES = frozenset(
    "Arc Box CStr CString Error Init InPlaceModule KBox KVBox KVVec KVec Module Opaque Pin PinInit Result String "
    "ThisModule VBox VVec Vec Zeroable Ok Err Some None Option Sized Send Sync Drop Default Clone Copy".split()
)
# names cargo refuses for a package: its own build folders, Rust's libraries, Windows' device names
TAKEN_BY_CARGO = frozenset(
    ["deps", "examples", "build", "incremental", "test", "core", "std", "alloc", "proc_macro", "proc-macro"]
    + ["con", "prn", "aux", "nul"]
    + [f"{device}{n}" for device in ("com", "lpt") for n in range(1, 10)]
)

MODULE_SOURCE = """\
// SPDX-License-Identifier: GPL-2.0

//! {name}: an out-of-tree Rust module made by `invoke new.module`, for Linux 6.12 and 7.x
//! (Kbuild sets the `module_authors` cfg where the `kernel` crate's module! wants `authors`).

use kernel::prelude::*;

#[cfg(not(module_authors))]
module! {{
    type: {type_name},
    name: "{name}",
    author: "crossboard user",
    description: "{name} (out-of-tree Rust module)",
    license: "GPL",
}}

#[cfg(module_authors)]
module! {{
    type: {type_name},
    name: "{name}",
    authors: ["crossboard user"],
    description: "{name} (out-of-tree Rust module)",
    license: "GPL",
}}

struct {type_name};

impl kernel::Module for {type_name} {{
    fn init(_module: &'static ThisModule) -> Result<Self> {{
        pr_info!("{name} loaded\\n");
        Ok({type_name})
    }}
}}

impl Drop for {type_name} {{
    fn drop(&mut self) {{
        pr_info!("{name} unloaded\\n");
    }}
}}
"""
# module! took `author:` in Linux 6.12 and takes `authors:` in 7.x: the kernel's macros library (in a
# built tree and in a devel bundle) tells which
MODULE_KBUILD = """\
obj-m := {name}.o

ifeq ($(shell grep -aqw authors $(objtree)/rust/libmacros.so && echo y),y)
rustflags-y += --cfg module_authors
endif
"""
APP_MANIFEST = """\
[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
description = "{name}: a userspace app made by `invoke new.app`"

[dependencies]
"""
APP_SOURCE = """\
fn main() {{
    println!("{name} runs on {{}}", std::env::consts::ARCH);
}}
"""


def new_module(board: LoadedBoard, name: str) -> Path:
    """modules/NAME (Kbuild and NAME.rs) and the board file listing it, with its load and unload
    messages expected."""
    if not MODULE_NAME.match(name):
        raise UserError(f"module name {name!r}: lower-case letters, digits and _, starting with a letter")
    if name in RUST_KEYWORDS or name in TAKEN_BY_THE_KERNEL:
        raise UserError(f"module name {name!r} is a Rust keyword or a crate every module links with: choose another")
    type_name = "".join(part.capitalize() for part in name.split("_"))
    if type_name in PRELUDE_NAMES:  # `result` would be a type Result, which the kernel prelude has already
        type_name += "Module"
    files = {
        "Kbuild": MODULE_KBUILD.format(name=name),
        f"{name}.rs": MODULE_SOURCE.format(name=name, type_name=type_name),
    }

    def add(document: CommentedMap) -> None:
        _listed(document, "modules", f"modules/{name}")
        deploy = document.setdefault("deploy", CommentedMap())
        expect = deploy.setdefault("expect", CommentedMap())
        expect[name] = CommentedMap(load=_flow([f"{name} loaded"]), unload=_flow([f"{name} unloaded"]))

    return _write(board, "modules", name, files, add)


def new_app(board: LoadedBoard, name: str) -> Path:
    """apps/NAME (a cargo package) and the board file listing it, with the line it should print."""
    if not APP_NAME.match(name):
        raise UserError(f"app name {name!r}: lower-case letters, digits, _ and -, starting with a letter")
    if name in RUST_KEYWORDS or name in TAKEN_BY_CARGO:
        raise UserError(
            f"app name {name!r} is one cargo refuses for a package (a Rust keyword or a reserved name): choose another"
        )
    files = {"Cargo.toml": APP_MANIFEST.format(name=name), "src/main.rs": APP_SOURCE.format(name=name)}

    def add(document: CommentedMap) -> None:
        path = f"apps/{name}"
        apps = document.setdefault("apps", CommentedSeq())
        if any(isinstance(app, dict) and app.get("path") == path for app in apps):
            raise UserError(f"apps already lists {path}")
        apps.append(CommentedMap(path=path, expect_stdout=_flow([f"{name} runs on aarch64"])))

    return _write(board, "apps", name, files, add)


def _flow(items: list[str]) -> CommentedSeq:
    """A list written on one line and quoted, as the board files write expected messages."""
    seq = CommentedSeq(DoubleQuotedScalarString(item) for item in items)
    seq.fa.set_flow_style()
    return seq


def _listed(document: CommentedMap, key: str, item: str) -> None:
    items = document.setdefault(key, CommentedSeq())
    if item in items:
        raise UserError(f"{key} already lists {item}")
    items.append(item)


def _write(board: LoadedBoard, kind: str, name: str, files: dict[str, str], add) -> Path:
    """The folder and the board file, or neither: the folder is made aside and moved into place, and
    taken away again when the board file cannot be written or no longer loads. The board file is edited
    where it really is (a link to a lab's shared file stays a link), under its lock."""
    folder = board.project_root / kind / name
    if folder.exists():
        raise UserError(f"{folder}: already exists; choose another name")
    _not_hidden(board, kind, folder)
    target = board.file.resolve()
    with holding(target, f"the board file {board.file.name}"):
        try:
            board_text = edited(target, add)
        except UserError as error:
            raise UserError(f"{board.file.name}: {error}") from None
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
        try:
            for relative, text in files.items():
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                (staging / relative).write_text(text)
            staging.chmod(0o755)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone once renamed; left half-made only by an interruption
        before = target.read_bytes()
        try:
            write_atomically(target, board_text)
            load_board(board.name, board.boards_dir)  # what was added must keep the board file valid
        except BaseException:
            write_atomically(target, before)
            shutil.rmtree(folder)
            raise
    return folder


def _not_hidden(board: LoadedBoard, kind: str, folder: Path) -> None:
    """A local override that lists modules (or apps) of its own hides the board file's: the new one would
    never be built, so nothing is made."""
    local = board.boards_dir / f"{board.name}.local.yaml"
    if local.is_file() and re.search(rf"^{kind}\s*:", local.read_text(), re.MULTILINE):
        raise UserError(
            f"{local.name} sets {kind}:, which replaces the board file's list, so {folder.name} would not be built: "
            f"add {kind}/{folder.name} there yourself, or run this without that key; nothing was written"
        )
