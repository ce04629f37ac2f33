"""What must hold before anything is loaded or run on a board; each refusal says what to do."""

from __future__ import annotations

from dataclasses import dataclass

from ..pipeline.toolcheck import dotted, version_in

# One round trip: the running release, whether its config has Rust, its glibc, who we are, and which
# modules are loaded.
FACTS_COMMAND = r"""release=$(uname -r)
echo "release=$release"
if [ -r /proc/config.gz ]; then rust=$(zcat /proc/config.gz | grep -c '^CONFIG_RUST=y')
elif [ -r "/boot/config-$release" ]; then rust=$(grep -c '^CONFIG_RUST=y' "/boot/config-$release")
else rust=unknown; fi
echo "rust=$rust"
echo "glibc=$( (getconf GNU_LIBC_VERSION 2>/dev/null || true) | cut -d' ' -f2)"
echo "user=$(id -un)"
echo "loaded=$(cut -d' ' -f1 /proc/modules 2>/dev/null | tr '\n' ' ')"
"""


@dataclass(frozen=True)
class BoardFacts:
    release: str
    rust: bool | None  # None: the board does not show its config
    glibc: tuple[int, ...] | None
    user: str
    loaded: frozenset[str]


def parse_facts(text: str) -> BoardFacts:
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    rust = values.get("rust", "unknown")
    return BoardFacts(
        release=values.get("release", "").strip(),
        rust=None if rust == "unknown" else rust.strip() not in ("", "0"),
        glibc=version_in(values.get("glibc", "")) if values.get("glibc", "").strip() else None,
        user=values.get("user", "").strip(),
        loaded=frozenset(values.get("loaded", "").split()),
    )


def module_problem(module: str, module_release: str, facts: BoardFacts) -> str | None:
    """Why `module` must not be loaded on this board, or None."""
    if module_release != facts.release:
        return (
            f"{module} was built for {module_release} but the board runs {facts.release} "
            "(insmod would say 'Invalid module format'): deploy a matching kernel "
            "(invoke deploy --kernel) or build against the board's kernel (invoke config.pull)"
        )
    if facts.rust is False:
        return (
            f"the board's kernel {facts.release} has no CONFIG_RUST (insmod would say "
            "'Unknown symbol __rust_alloc'): deploy a kernel built with Rust"
        )
    return None


def app_problem(app: str, needed_glibc: str, facts: BoardFacts) -> str | None:
    if not needed_glibc or facts.glibc is None:
        return None
    needed = version_in(needed_glibc)
    if needed is not None and needed > facts.glibc:
        return (
            f"{app} needs GLIBC_{needed_glibc} but the board has glibc {dotted(facts.glibc)} "
            "('GLIBC_x.y not found'): build it static (apps[].static: true) or for musl"
        )
    return None
