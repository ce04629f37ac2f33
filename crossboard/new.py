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

MODULE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,54}$")  # a C and Rust identifier, and a kernel module name
APP_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")  # a cargo package name

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
    type_name = "".join(part.capitalize() for part in name.split("_"))
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
    taken away again when the board file cannot be written or no longer loads."""
    folder = board.project_root / kind / name
    if folder.exists():
        raise UserError(f"{folder}: already exists; choose another name")
    try:
        board_text = edited(board.file, add)
    except UserError as error:
        raise UserError(f"{board.file.name}: {error}") from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    for relative, text in files.items():
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        (staging / relative).write_text(text)
    staging.chmod(0o755)
    staging.rename(folder)
    before = board.file.read_bytes()
    try:
        write_atomically(board.file, board_text)
        load_board(board.name, board.boards_dir)  # what was added must keep the board file valid
    except BaseException:
        write_atomically(board.file, before)
        shutil.rmtree(folder)
        raise
    return folder
