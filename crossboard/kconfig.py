"""Reading Kconfig files, and saying why a requested symbol did not stick."""

from __future__ import annotations

import re
from pathlib import Path

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")

# Set, each of these makes olddefconfig drop CONFIG_RUST without a word (init/Kconfig, 6.12).
RUST_BLOCKERS = ("CONFIG_MODVERSIONS", "CONFIG_GCC_PLUGINS", "CONFIG_RANDSTRUCT", "CONFIG_DEBUG_INFO_BTF")


def parse(text: str) -> dict[str, str]:
    """Symbol -> value as written (`y`, `m`, `"str"`, `0x10`); `# X is not set` reads as `n`."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if match := _SET.match(line):
            values[match[1]] = match[2]
        elif match := _UNSET.match(line):
            values[match[1]] = "n"
    return values


def read(path: Path) -> dict[str, str]:
    return parse(path.read_text())


# The first line of a config pulled from a board (invoke config.pull): which kernel build it came from.
PULLED_HEADER = "# crossboard: pulled from a board's running kernel, build ID "


def pulled_header(build_id: str) -> str:
    return f"{PULLED_HEADER}{build_id}\n" if build_id else ""


def pulled_build_id(config_file: Path | None) -> str:
    """The build ID of the running kernel `config_file` was pulled from, or "" (not pulled, or unknown)."""
    if config_file is None or not config_file.is_file():
        return ""
    with open(config_file, errors="replace") as handle:
        first = handle.readline()
    return first.removeprefix(PULLED_HEADER).strip() if first.startswith(PULLED_HEADER) else ""


def unmet(requested: dict[str, str], final: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Symbols whose final value differs from the request: symbol -> (requested, final)."""
    return {symbol: (wanted, final.get(symbol, "n")) for symbol, wanted in requested.items() if final.get(symbol, "n") != wanted}


def why_no_rust(final: dict[str, str]) -> str:
    """The reason CONFIG_RUST is not set in a final .config, as precisely as the config tells."""
    blockers = [symbol for symbol in RUST_BLOCKERS if final.get(symbol, "n") == "y"]
    if blockers:
        return (
            f"{', '.join(blockers)} {'is' if len(blockers) == 1 else 'are'} set and Rust cannot coexist with it: "
            f"add '# {blockers[0]} is not set' to a fragment"
        )
    if final.get("CONFIG_HAVE_RUST", "n") != "y":
        return "HAVE_RUST is not set: this kernel has no Rust support for the architecture (arm64 needs Linux >= 6.9)"
    if final.get("CONFIG_RUST_IS_AVAILABLE", "n") != "y":
        return "RUST_IS_AVAILABLE is not set: the toolchain does not pass `make LLVM=1 rustavailable` (configure with LLVM=1)"
    return "a dependency of RUST is not met: see `make menuconfig`, search RUST"


def describe_unmet(problems: dict[str, tuple[str, str]], final: dict[str, str]) -> str:
    """One line: the first unmet symbols, and for RUST the reason."""
    parts = [
        f"{symbol}={wanted} requested but the final .config has {got}"
        for symbol, (wanted, got) in sorted(problems.items(), key=lambda item: item[0] != "CONFIG_RUST")
    ]
    text = "; ".join(parts[:3]) + (f" (and {len(parts) - 3} more)" if len(parts) > 3 else "")
    if "CONFIG_RUST" in problems:
        text += f". Why RUST: {why_no_rust(final)}"
    return text
