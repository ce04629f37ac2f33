"""The kernel's own minimum tool versions (scripts/min-tool-version.sh) against the image's tools."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import StepFailed
from ..versions import dotted, version_in

# What `invoke build` checks before compiling anything: tool -> the command that prints its version.
CHECKED_TOOLS = {
    "rustc": ["rustc", "--version"],
    "bindgen": ["bindgen", "--version"],
    "llvm": ["clang", "--version"],
}
# Before 6.11 the kernel pinned exact rustc/bindgen versions, so on those trees a newer one is worth
# a word; a newer LLVM never was a problem.
NEWER_MATTERS = {"rustc", "bindgen"}
MINIMUMS_SINCE = (6, 11)


@dataclass(frozen=True)
class ToolVerdict:
    tool: str
    minimum: tuple[int, ...]
    found: tuple[int, ...] | None
    tree: tuple[int, ...] | None = None  # the kernel's version, when known

    @property
    def too_old(self) -> bool:
        return self.found is None or self.found < self.minimum

    @property
    def newer(self) -> bool:
        return self.tool in NEWER_MATTERS and self.found is not None and self.found > self.minimum

    @property
    def worth_a_warning(self) -> bool:
        """A newer rustc or bindgen, on a tree old enough (or unknown) to have wanted exact versions."""
        return self.newer and (self.tree is None or self.tree[:2] < MINIMUMS_SINCE)

    def message(self) -> str:
        if self.found is None:
            return f"{self.tool} not found in the toolchain; the kernel needs >= {dotted(self.minimum)}"
        if self.too_old:
            return (
                f"{self.tool} {dotted(self.found)} is older than the kernel's minimum {dotted(self.minimum)} "
                f"(scripts/min-tool-version.sh): build with a profile that has a newer one (--toolchain; "
                f"--toolchain all tries every profile)"
            )
        if self.newer:
            return f"{self.tool} {dotted(self.found)} is newer than the kernel's minimum {dotted(self.minimum)}" + (
                "; kernels >= 6.11 accept that, older ones may not" if self.worth_a_warning else ""
            )
        return f"{self.tool} {dotted(self.found)} meets the kernel's minimum {dotted(self.minimum)}"


def tool_lines(runtime) -> dict[str, str]:
    """Each checked tool's own version line ("" when it does not answer)."""
    lines = {}
    for tool, version_argv in CHECKED_TOOLS.items():
        code, text = runtime.output(version_argv)
        lines[tool] = text.strip().splitlines()[0] if code == 0 and text.strip() else ""
    return lines


def check_tools(runtime, source_tree: str, tree: tuple[int, ...] | None = None) -> list[tuple[ToolVerdict, str]]:
    """Each checked tool's verdict against the kernel tree's minimum, with the tool's own version line."""
    results = []
    for tool, found_line in tool_lines(runtime).items():
        code, minimum_text = runtime.output(["sh", f"{source_tree}/scripts/min-tool-version.sh", tool])
        minimum = version_in(minimum_text) if code == 0 else None
        if minimum is None:
            raise StepFailed(f"the kernel's scripts/min-tool-version.sh {tool} gave no version: {minimum_text.strip()}")
        results.append((ToolVerdict(tool, minimum, version_in(found_line) if found_line else None, tree), found_line))
    return results
