"""The kernel devel bundle: what an out-of-tree module build needs of a built kernel, without the rest
of the tree, in one tarball (`kernel-devel-<release>.tar.gz`), and the checks of a build against one.

The C side is the kernel's own list (scripts/package/install-extmod-build, what its headers packages
ship); the Rust side is what distribution headers packages leave out and a Rust module cannot be built
without: the crates' metadata (rust/*.rmeta), the compiler-side macro libraries (rust/*.so, built for
the machine that builds, not the board) and the target spec where the architecture has one. rustc
reads that metadata only when it is the very rustc that wrote it, so the bundle names it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError

INFO_NAME = "crossboard-devel.json"
# Raised when what goes into a bundle changes, so that bundles are made again.
BUNDLE_FORMAT = 1
# What a Rust module build reads besides the C side, relative to the kernel's build folder (O=).
RUST_FILES = ("rust/*.rmeta", "rust/*.so", "rust/helpers/*.bc", "rust/target.json", "scripts/target.json")


def bundle_name(release: str) -> str:
    return f"kernel-devel-{release}"


def assemble_command(source_tree: str, kernel_dir: str, dest: str) -> list[str]:
    """The shell command that fills `dest` (a fresh folder) from a built kernel, run where the kernel was
    built. With LLVM=1 CC and HOSTCC are both clang, so the kernel's script keeps the host programs
    (fixdep, modpost) as built: the bundle builds modules on the same kind of machine as the toolchain
    image, as the macro libraries need anyway."""
    script = f"""set -eu
dest={shlex.quote(dest)}
cd {shlex.quote(kernel_dir)}
srctree={shlex.quote(source_tree)} SRCARCH=arm64 CC=clang HOSTCC=clang MAKE=make \\
  sh {shlex.quote(source_tree)}/scripts/package/install-extmod-build "$dest"
cp .config "$dest/.config"
for file in {" ".join(RUST_FILES)}; do
  if [ -e "$file" ]; then mkdir -p "$dest/$(dirname "$file")" && cp "$file" "$dest/$file"; fi
done
test -f "$dest/rust/libkernel.rmeta"
uname -m > "$dest/.builds-on"
"""
    return ["sh", "-c", script]


def describe_command() -> str:
    return (
        "the kernel's scripts/package/install-extmod-build (headers, Kbuild files, host programs, Module.symvers, "
        f"generated headers), .config and the Rust files ({', '.join(RUST_FILES)})"
    )


@dataclass(frozen=True)
class BundleInfo:
    """crossboard-devel.json at the top of a bundle: the kernel it is of, and the tools that built it."""

    board: str
    toolchain: str  # the profile
    image: str  # the toolchain image's ref
    kernel_release: str
    kernel_build_id: str
    tools: dict[str, str]  # tool -> its version line (rustc --version, bindgen --version, clang --version)
    builds_on: str  # the machine the host programs and macro libraries run on (uname -m of the image)
    format: int = BUNDLE_FORMAT

    def text(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def read_info(tree: Path, shown: str) -> BundleInfo:
    """The info of an unpacked bundle; one line naming the bundle when it is not a bundle crossboard made."""
    try:
        data = json.loads((tree / INFO_NAME).read_text())
        info = BundleInfo(**data)
    except FileNotFoundError:
        raise UserError(f"kernel.source.devel: {shown} has no {INFO_NAME}: not a bundle invoke build wrote") from None
    except (ValueError, TypeError) as error:
        raise UserError(f"kernel.source.devel: {shown}: {INFO_NAME} is damaged ({error})") from None
    if not isinstance(info.tools, dict) or not all(isinstance(v, str) for v in info.tools.values()):
        raise UserError(f"kernel.source.devel: {shown}: {INFO_NAME} is damaged (tools is not a mapping of version lines)")
    if info.format != BUNDLE_FORMAT:
        raise UserError(
            f"kernel.source.devel: {shown} is a bundle of format {info.format}, this crossboard reads {BUNDLE_FORMAT}: "
            "make it again with this crossboard's invoke build"
        )
    return info


@dataclass(frozen=True)
class ToolDifference:
    tool: str
    bundle: str  # the version line the bundle's kernel was built with
    here: str  # this build's


def tool_differences(info: BundleInfo, found: dict[str, str]) -> list[ToolDifference]:
    return [
        ToolDifference(tool, info.tools.get(tool, ""), line) for tool, line in found.items() if info.tools.get(tool, "") != line
    ]


def refusal(difference: ToolDifference, info: BundleInfo, profile: str) -> str | None:
    """Why a module cannot be built against the bundle with this build's tools, or None when the difference
    only deserves a word: rustc must be the one that wrote the kernel crate's metadata (else error E0514,
    'compiled by an incompatible version of rustc'); modules never run bindgen, and another clang only
    compiles the C stub."""
    if difference.tool != "rustc":
        return None
    return (
        f"kernel.source.devel: the bundle's kernel {info.kernel_release} was built with {difference.bundle or 'no rustc'} "
        f"(toolchain profile {info.toolchain}), this build has {difference.here or 'no rustc'} (profile {profile}): "
        f"rustc reads the kernel crate only from the rustc that wrote it; build with --toolchain {info.toolchain}"
    )
