"""What must hold before anything is loaded or run on a board; each refusal says what to do."""

from __future__ import annotations

from dataclasses import dataclass

from ..artifacts.files import NOTES_AS_HEX, build_id_in_hex_notes
from ..versions import dotted, version_in

# One round trip: the running release, whether its config has Rust, its glibc, who we are, which
# modules are loaded, and the kernel's ELF notes (its build ID among them). Shell builtins where they
# do: every process started costs a slow board milliseconds, and a fleet's boards run this each deploy.
FACTS_COMMAND = (
    r"""read -r release 2>/dev/null </proc/sys/kernel/osrelease || release=$(uname -r)
echo "release=$release"
if [ -r /proc/config.gz ]; then rust=$(zcat /proc/config.gz | grep -c '^CONFIG_RUST=y')
elif [ -r "/boot/config-$release" ]; then rust=$(grep -c '^CONFIG_RUST=y' "/boot/config-$release")
else rust=unknown; fi
echo "rust=$rust"
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null) || glibc=
echo "glibc=${glibc#* }"
echo "user=$(id -un)"
loaded=
while read -r name rest; do loaded="$loaded$name "; done 2>/dev/null </proc/modules
echo "loaded=$loaded"
echo "notes=$("""
    + NOTES_AS_HEX
    + """)"
"""
)


@dataclass(frozen=True)
class BoardFacts:
    release: str
    rust: bool | None  # None: the board does not show its config
    glibc: tuple[int, ...] | None
    user: str
    loaded: frozenset[str]
    build_id: str = ""  # the running kernel's GNU build ID; "" when the board does not show it


def parse_facts(text: str) -> BoardFacts:
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    rust = values.get("rust", "unknown")
    return BoardFacts(
        release=values.get("release", "").strip(),
        rust=None if rust == "unknown" else rust.strip() not in ("", "0"),
        glibc=version_in(values.get("glibc", "")) if values.get("glibc", "").strip() else None,
        user=values.get("user", "").strip(),
        loaded=frozenset(values.get("loaded", "").split()),
        build_id=build_id_in_hex_notes(values.get("notes", "")),
    )


def module_problem(module: str, module_release: str, facts: BoardFacts, kernel_builds: tuple[str, ...] = ()) -> str | None:
    """Why `module` must not be loaded on this board, or None. `kernel_builds`: the build IDs of the
    kernels the module was built for (FinishedBuild.kernel_builds); none known, none checked."""
    if module_release != facts.release:
        return (
            f"{module} was built for {module_release} but the board runs {facts.release} "
            "(insmod would say 'Invalid module format'): deploy a matching kernel "
            "(invoke deploy --kernel) or build against the board's kernel (invoke config.pull)"
        )
    if kernel_builds and facts.build_id and facts.build_id not in kernel_builds:
        return (
            f"{module} was built for kernel build {kernel_builds[0][:12]} of {module_release} but the board runs "
            f"build {facts.build_id[:12]} of that release (another configuration or tree: without MODVERSIONS the "
            "kernel would load the module, which may then corrupt memory): deploy this build's kernel "
            "(invoke deploy --kernel) or build against the board's own (invoke config.pull)"
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
