"""The package's floors as the README's Layout lists them: every import, at the top of a module or
inside a function, goes to the module's own floor or one below."""

import ast
import re
from pathlib import Path

import pytest

from crossboard import PROJECT_ROOT

pytestmark = pytest.mark.fast
PACKAGE = PROJECT_ROOT / "crossboard"


def floors() -> dict[str, int]:
    """{module or package name under crossboard/: its floor} from the README's numbered list."""
    layout = (PROJECT_ROOT / "README.md").read_text().split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    found = {}
    for number, names in re.findall(r"^(\d+)\. ((?:`[^`]+`(?:, )?)+)$", layout, re.MULTILINE):
        for name in re.findall(r"`([^`]+)`", names):
            found[name.rstrip("/")] = int(number)
    return found


def unit_of(path: Path) -> str:
    """The top-level module or package of crossboard/ a file belongs to."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_units(path: Path) -> set[str]:
    module = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = [f"{target}.{alias.name}" for alias in node.names] if not node.module else [target]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "crossboard":
                found.add(parts[1] if len(parts) > 1 and parts[1] != "PROJECT_ROOT" else "__init__")
    return found


def test_the_readme_names_every_part_of_the_package():
    parts = {unit_of(path) for path in PACKAGE.rglob("*.py")}
    assert parts - set(floors()) == set(), "parts of crossboard/ the README's Layout does not place"


def test_every_import_goes_to_the_same_floor_or_below():
    floor = floors()
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mine = unit_of(path)
        for other in imported_units(path):
            if floor.get(other, 0) > floor[mine]:
                upward.append(f"{path.relative_to(PROJECT_ROOT)} (floor {floor[mine]}) imports {other} (floor {floor[other]})")
    assert upward == []
