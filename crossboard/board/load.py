"""Find, read, merge and validate a board file; every problem is one line naming file, line and key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .. import PROJECT_ROOT, strict_yaml
from ..errors import UserError
from ..toolchain.profiles import Profile, load_profile
from .schema import BOARD_NAME, BoardSpec, Group

# The project's own boards; a lab may keep its board files elsewhere (Settings.boards_dir), and relative
# paths in them are then relative to that folder's parent.
PROJECT_BOARDS = PROJECT_ROOT / "boards"
GROUP_SUFFIX = ".group.yaml"
# Choices of one among several keys: an override replaces them whole instead of adding a second key.
ONE_OF_KEYS = frozenset({("kernel", "source")})


@dataclass(frozen=True)
class LoadedBoard:
    """A validated board: its name, its spec, and where its relative paths point."""

    name: str
    spec: BoardSpec
    file: Path
    boards_dir: Path
    project_root: Path
    sha256: str
    # names the board's folders in the cache and out/: the board's name, or `<board>@<profile>` when it
    # is built with a profile other than its own (--toolchain)
    build_name: str

    @property
    def profile(self) -> Profile:
        return load_profile(self.spec.toolchain)

    def out_dir(self, out_root: Path) -> Path:
        """Where this build's outputs are: out/<board>, or out/<board>@<profile> (`build_name`)."""
        return out_root / self.build_name

    def renamed(self, name: str) -> LoadedBoard:
        """The same board under another name, so with folders of its own (tests, benchmarks)."""
        return replace(self, name=name, build_name=name)

    def toolchain_problem(self) -> tuple[tuple[str, ...], str] | None:
        """Why the board's profile cannot build it, with the board-file key to blame: the profile does
        not exist, or its image does not hold the Debian kernel source the board names."""
        try:
            profile = self.profile
        except UserError as error:
            return ("toolchain",), str(error)
        package, held = self.spec.kernel.source.debian, profile.kernel_sources()
        if package is not None and package not in held:
            return ("kernel", "source", "debian"), (
                f"toolchain profile {profile.name} does not hold {package} (it holds {', '.join(held) or 'none'}): "
                "name it in the profile's packages.txt, or choose a profile that holds it"
            )
        return None

    def with_toolchain(self, profile: str) -> LoadedBoard:
        """The board built with another profile, into folders of its own; UserError when it cannot be."""
        if profile == self.spec.toolchain:
            return self
        spec = self.spec.model_copy(update={"toolchain": profile})
        other = replace(self, spec=spec, build_name=f"{self.name}@{profile}")
        problem = other.toolchain_problem()
        if problem:
            raise UserError(f"--toolchain {profile}: {problem[1]}")
        return other

    @property
    def config_base(self) -> str:
        """kernel.config.base; "" for a board built against a devel bundle, which configures nothing."""
        config = self.spec.kernel.config
        return config.base if config else ""

    def base_config_file(self) -> Path | None:
        """The full config file `kernel.config.base: file:NAME` names, or None for a make target."""
        base = self.config_base
        return self.boards_dir / base.removeprefix("file:") if base.startswith("file:") else None

    def fragment_paths(self) -> list[Path]:
        config = self.spec.kernel.config
        return [self.boards_dir / fragment for fragment in config.fragments] if config else []

    def devel_bundle(self) -> Path | None:
        """The devel bundle `kernel.source.devel` names (relative to the project), or None."""
        bundle = self.spec.kernel.source.devel
        return (self.project_root / Path(bundle).expanduser()).resolve() if bundle else None

    def module_dirs(self) -> list[Path]:
        return [(self.project_root / module).resolve() for module in self.spec.modules]

    def app_dirs(self) -> list[Path]:
        return [(self.project_root / app.path).resolve() for app in self.spec.apps]


def board_names(boards_dir: Path = PROJECT_BOARDS) -> list[str]:
    return sorted(p.stem for p in boards_dir.glob("*.yaml") if BOARD_NAME.match(p.stem))


def group_names(boards_dir: Path = PROJECT_BOARDS) -> list[str]:
    return sorted(p.name.removesuffix(GROUP_SUFFIX) for p in boards_dir.glob(f"*{GROUP_SUFFIX}"))


def load_group(name: str, boards_dir: Path = PROJECT_BOARDS) -> Group:
    """boards/<name>.group.yaml, every board it lists checked to have a board file."""
    file = boards_dir / f"{name}{GROUP_SUFFIX}"
    located = strict_yaml.load(file, _display(file, boards_dir.parent))
    try:
        group = Group.model_validate(located.value)
    except ValidationError as error:
        first = error.errors()[0]
        raise UserError(_where(located, first["loc"]) + f" {strict_yaml.dotted(first['loc'])}: {_explain(first)}") from None
    for index, member in enumerate(group.boards):
        if not (boards_dir / f"{member}.yaml").is_file():
            raise UserError(f"{_where(located, ('boards', index))} boards[{index}]: no board file {member}.yaml")
    return group


def expand_board_names(text: str, boards_dir: Path = PROJECT_BOARDS) -> list[str]:
    """`--board a,b,lab`: the names in order, each group replaced by its boards, each board once."""
    names: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        is_group = BOARD_NAME.match(item) and (boards_dir / f"{item}{GROUP_SUFFIX}").is_file()
        names += [name for name in (load_group(item, boards_dir).boards if is_group else [item]) if name not in names]
    if not names:
        raise UserError("--board: name at least one board or group")
    return names


def load_board(name: str, boards_dir: Path = PROJECT_BOARDS, overrides: dict | None = None) -> LoadedBoard:
    """Load boards/<name>.yaml, then boards/<name>.local.yaml (untracked) and `overrides` over it."""
    project_root = boards_dir.parent
    file = boards_dir / f"{name}.yaml"
    display = _display(file, project_root)
    if not BOARD_NAME.match(name) or not file.is_file():
        known = ", ".join(board_names(boards_dir)) or "none"
        raise UserError(f"{display}: no such board (known boards: {known})")
    located = strict_yaml.load(file, display)
    local_file = boards_dir / f"{name}.local.yaml"
    if local_file.is_file():
        located = strict_yaml.merge(located, strict_yaml.load(local_file, _display(local_file, project_root)), ONE_OF_KEYS)
    if overrides:
        located = strict_yaml.merge(located, _from_option(overrides), ONE_OF_KEYS)
    spec = _validate(located)
    board = LoadedBoard(
        name=name,
        spec=spec,
        file=file,
        boards_dir=boards_dir,
        project_root=project_root,
        # what the board says once its local override and the command line had their say
        sha256=hashlib.sha256(json.dumps(located.value, sort_keys=True).encode()).hexdigest(),
        build_name=name,
    )
    _check_paths(board, located)
    return board


SOURCE_FORMS = "debian:PKG, path:DIR, tarball:URL@SHA256, git:URL@REF, devel:BUNDLE"


def source_override(text: str) -> dict:
    """`--kernel-source` as board-file keys (SOURCE_FORMS); a devel bundle's relative path is relative to
    where the command runs, as paths on a command line are."""
    kind, _, value = text.partition(":")
    if kind == "devel" and value:
        return {"kernel": {"source": {kind: str(Path(value).expanduser().resolve())}}}
    if kind in ("debian", "path") and value:
        return {"kernel": {"source": {kind: value}}}
    if kind in ("tarball", "git") and "@" in value:
        url, last = value.rsplit("@", 1)
        return {"kernel": {"source": {kind: {"url": url, ("sha256" if kind == "tarball" else "ref"): last}}}}
    raise UserError(f"--kernel-source: {text!r} is not one of {SOURCE_FORMS}")


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _from_option(overrides: dict) -> strict_yaml.Located:
    """Values given on the command line, placed as if written in a file called `command line`."""
    located = strict_yaml.Located(value=overrides)

    def mark(value, path):
        located.lines[path] = (Path("command line"), 0)
        if isinstance(value, dict):
            for key, inner in value.items():
                mark(inner, path + (key,))

    mark(overrides, ())
    return located


def _validate(located: strict_yaml.Located) -> BoardSpec:
    try:
        return BoardSpec.model_validate(located.value)
    except ValidationError as error:
        first = error.errors()[0]
        path = tuple(part for part in first["loc"] if not str(part).startswith("function-"))
        raise UserError(_where(located, path) + f" {strict_yaml.dotted(path)}: {_explain(first)}") from None


def _where(located: strict_yaml.Located, path) -> str:
    file, line = located.where(path)
    return f"{file}:{line}:" if line else f"{file}:"


def _explain(error: Any) -> str:
    kind, given = error["type"], error.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "bool_type" and isinstance(given, str):
        return f"expected true or false, got {given!r} (YAML 1.1 words like no/on/yes/off are not booleans here)"
    if kind == "int_type" and isinstance(given, str):
        return f"expected a plain decimal number, got {given!r}"
    if kind == "string_type" and isinstance(given, (int, float, bool)):
        return f"expected text, got {given!r}: put it in quotes"
    if kind == "string_pattern_mismatch":
        return f"{given!r} does not have the expected form ({error['ctx']['pattern']})"
    message = error["msg"]
    return message.removeprefix("Value error, ")


def _check_paths(board: LoadedBoard, located: strict_yaml.Located) -> None:
    problem = board.toolchain_problem()
    if problem:
        blamed, why = problem
        raise UserError(f"{_where(located, blamed)} {strict_yaml.dotted(blamed)}: {why}")
    bundle = board.devel_bundle()
    if bundle is not None and not bundle.is_file():
        where = _where(located, ("kernel", "source", "devel"))
        raise UserError(
            f"{where} kernel.source.devel: no such file {_display(bundle, board.project_root)} "
            "(invoke build writes one as out/<board>/kernel-devel-<release>.tar.gz)"
        )
    base_file = board.base_config_file()
    inside = (board.project_root.resolve(), board.boards_dir.resolve())
    named: list[tuple[tuple, Path]] = [(("kernel", "config", "base"), base_file)] if base_file is not None else []
    named += [(("kernel", "config", "fragments", index), fragment) for index, fragment in enumerate(board.fragment_paths())]
    for keys, file in named:
        if not any(file.resolve().is_relative_to(folder) for folder in inside):
            raise UserError(
                f"{_where(located, keys)} {strict_yaml.dotted(keys)}: {file} is outside the project and its boards folder"
            )
    if base_file is not None and not base_file.is_file():
        where = _where(located, ("kernel", "config", "base"))
        raise UserError(f"{where} kernel.config.base: no such file {_display(base_file, board.project_root)}")
    for index, fragment in enumerate(board.fragment_paths()):
        if not fragment.is_file():
            where = _where(located, ("kernel", "config", "fragments", index))
            raise UserError(f"{where} kernel.config.fragments[{index}]: no such file {_display(fragment, board.project_root)}")
    for key, folders in (("modules", board.module_dirs()), ("apps", board.app_dirs())):
        for index, folder in enumerate(folders):
            if not folder.is_relative_to(board.project_root.resolve()):
                where = _where(located, (key, index))
                raise UserError(f"{where} {key}[{index}]: {folder} is outside the project: copy it in, or link the project to it")
    for index, module in enumerate(board.module_dirs()):
        if not module.is_dir():
            where = _where(located, ("modules", index))
            raise UserError(f"{where} modules[{index}]: no such folder {_display(module, board.project_root)}")
    for index, app in enumerate(board.app_dirs()):
        if not (app / "Cargo.toml").is_file():
            where = _where(located, ("apps", index, "path"))
            raise UserError(f"{where} apps[{index}].path: no Cargo.toml in {_display(app, board.project_root)}")
