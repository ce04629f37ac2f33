"""What each invoke task does, behind tasks.py's argument parsing."""

from __future__ import annotations

from .artifacts.manifest import finished_build
from .board.load import board_names, expand_board_names, group_names, load_board, load_group, source_override
from .errors import StepFailed, UserError
from .remote.access import Access
from .remote.places import reserved
from .settings import Settings, setting_error
from .toolchain.engine import engine_url, is_local
from .toolchain.image import prepare_toolchain
from .toolchain.profiles import load_profile, profile_names


def list_boards(settings: Settings) -> list[tuple[str, str]]:
    """(name, description) of every board, then of every group with its boards; a file with a mistake
    is listed with it, and the others as usual."""

    def describe(name: str, load, say) -> tuple[str, str]:
        try:
            return name, say(load(name, settings.boards_dir))
        except UserError as error:
            return name, f"INVALID: {error}"

    if not settings.boards_dir.is_dir():
        raise setting_error("boards", settings.boards_dir, "no such folder")
    return [describe(name, load_board, lambda board: board.spec.description) for name in board_names(settings.boards_dir)] + [
        describe(name, load_group, lambda group: f"group: {group.description} ({', '.join(group.boards)})")
        for name in group_names(settings.boards_dir)
    ]


def toolchain(
    settings: Settings,
    profile: str = "all",
    echo: bool = True,
    verbose: bool = False,
    plain: bool = False,
    remember: bool = False,
) -> list:
    """Build each named profile's image (`all`: every profile) if its build context changed; a no-op
    otherwise. `remember`: the base image and mirror were chosen on the command line, and later commands
    use them too."""
    images = [prepare_toolchain(settings, load_profile(name), echo, verbose, plain)[1] for name in _profiles(profile)]
    if remember:
        settings.remember_toolchain_choice()
    return images


def _profiles(profile: str) -> list[str]:
    return profile_names() if profile == "all" else [load_profile(profile).name]


def update_locks(settings: Settings, profile: str = "all", verbose: bool = False, plain: bool = False) -> dict[str, list[str]]:
    """Each named profile's image built at what the archive offers now, and its packages.lock rewritten
    to that: the changed lines, by profile."""
    from .toolchain.lockfile import update_lock

    return {name: update_lock(settings, load_profile(name), True, verbose, plain) for name in _profiles(profile)}


def carry_toolchain(settings: Settings, profile: str, export: str | None, load: str | None) -> list[str]:
    """`--export FILE` (one profile's image into a file) or `--import FILE`; what was carried, by tag."""
    from pathlib import Path

    from .toolchain.carry import export_image, import_image

    if export and load:
        raise UserError("--export and --import: give one of them")
    if load:
        return import_image(Path(load))
    if profile == "all":
        raise UserError("--export: name the profile whose image to write (--profile NAME)")
    return [export_image(settings, load_profile(profile), Path(export or ""))]


def build(
    board_name: str,
    settings: Settings,
    options,
    runtime: str = "docker",
    kernel_source: str | None = None,
    toolchain: str | None = None,
):
    """The board's build; `toolchain`: another profile than the board's, or `all` for every profile
    that can build it (then a table, and StepFailed when one that could did not)."""
    from .pipeline.matrix import build_all_profiles, table
    from .pipeline.pipeline import build as run_build
    from .pipeline.pipeline import print_plan

    board = load_board(board_name, settings.boards_dir, source_override(kernel_source) if kernel_source else None)
    if runtime == "volumes" or (runtime == "docker" and not is_local(engine_url())):
        return _build_on_engine(board, settings, options, kernel_source, toolchain)
    if toolchain == "all" and options.dry_run:
        for name in profile_names():
            try:
                print_plan(board.with_toolchain(name), settings, options, runtime)
            except UserError as error:
                print(f"toolchain profile {name}: not offered ({error})")
        return None
    if toolchain == "all":
        rows = build_all_profiles(board, settings, options, runtime)
        print(table(rows))
        failed = [row.profile for row in rows if not row.ok]
        if failed:
            raise StepFailed(
                f"{board_name}: {len(failed)} of {len(rows)} toolchain profiles did not build it: {', '.join(failed)}"
            )
        return None
    variant = board.with_toolchain(toolchain) if toolchain else board
    if options.dry_run:
        print_plan(variant, settings, options, runtime)
        return None
    return run_build(variant, settings, options, runtime)


def _build_on_engine(board, settings: Settings, options, kernel_source: str | None, toolchain: str | None):
    """The build on an engine that cannot see this machine's folders (pipeline/engine_build.py)."""
    from .pipeline.engine_build import build_on_engine

    if toolchain == "all":
        raise UserError("--toolchain all: not on a remote Docker engine (or --runtime volumes): name one profile")
    variant = board.with_toolchain(toolchain) if toolchain else board
    client, image = prepare_toolchain(settings, variant.profile, options.echo, options.verbose, options.plain)
    return build_on_engine(client, engine_url(), board, settings, options, kernel_source, toolchain, image)


def ide(board_name: str, settings: Settings) -> list:
    from .pipeline.ide import write_editor_files

    return write_editor_files(load_board(board_name, settings.boards_dir), settings)


def new(kind: str, name: str, board_name: str, settings: Settings) -> str:
    from .new import new_app, new_module

    board = load_board(board_name, settings.boards_dir)
    folder = (new_module if kind == "module" else new_app)(board, name)
    return (
        f"{board_name}: made {folder.relative_to(board.project_root)} and listed it in {board.file.name}; "
        f"invoke build --board {board_name} && invoke deploy --board {board_name} "
        + ("loads it" if kind == "module" else "runs it")
    )


def doctor(settings: Settings, board_name: str | None = None) -> None:
    from .doctor import doctor as run_doctor

    run_doctor(settings, load_board(board_name, settings.boards_dir) if board_name else None)


def deploy(
    boards: str,
    settings: Settings,
    options,
    trust_new_host: bool = False,
    kernel: bool = False,
    reboot: bool = False,
    twin: bool = False,
    toolchain: str | None = None,
) -> list[dict]:
    """`toolchain`: deploy the build made with that profile (out/<board>@<profile>/)."""
    from .deploy.run import deploy_many

    if reboot and not kernel:
        raise UserError("--reboot goes with --kernel: it boots the kernel just installed")
    names = expand_board_names(boards, settings.boards_dir)
    if kernel:
        return [install_kernel(name, settings, trust_new_host, reboot, toolchain) for name in names]
    boards_to_deploy = [_board_or_twin(name, settings, twin, toolchain) for name in names]  # each board file first
    for board in boards_to_deploy:  # a board never built is bad input: refused before any board is touched
        finished_build(board.out_dir(settings.out_dir), board.name)
    with reserved(boards_to_deploy, options.echo) as reachable:
        return deploy_many(reachable, settings.out_dir, options, Access(settings.known_hosts, trust_new_host))


def _board_or_twin(board_name: str, settings: Settings, twin: bool, toolchain: str | None = None):
    from .virtual.twin import twin_of

    board = load_board(board_name, settings.boards_dir)
    board = board.with_toolchain(toolchain) if toolchain else board
    return twin_of(board) if twin else board


def virtual_board(board_name: str, settings: Settings, toolchain: str | None = None):
    """A virtual board, or a hardware board's twin (its own build on QEMU); `toolchain`: the build that
    profile made."""
    from .virtual.qemu import VirtualBoard
    from .virtual.twin import twin_of

    board = load_board(board_name, settings.boards_dir)
    board = board.with_toolchain(toolchain) if toolchain else board
    return VirtualBoard(board if board.spec.virtual else twin_of(board), settings, twin=board.spec.virtual is None)


def dev(
    board_name: str,
    module: str,
    settings: Settings,
    trust_new_host: bool = False,
    echo: bool = True,
    twin: bool = False,
    toolchain: str | None = None,
) -> dict:
    with reserved([_board_or_twin(board_name, settings, twin, toolchain)], echo) as (board,):
        return reload_module(board, module, settings, trust_new_host, echo)


def reload_module(board, module: str, settings: Settings, trust_new_host: bool = False, echo: bool = True) -> dict:
    """The inner loop: rebuild the out-of-tree modules, push what changed, reload the one named (left
    loaded) and report its kernel messages."""
    from .deploy.run import DeployOptions, deploy_many, open_board_early
    from .pipeline.context import BuildOptions
    from .pipeline.pipeline import build as run_build

    names = [folder.name for folder in board.module_dirs()]
    if module not in names:
        raise UserError(f"--module: {board.file.name} lists no module {module!r} (modules: {', '.join(names) or 'none'})")
    options = DeployOptions(keep_loaded=True, modules=frozenset({module}), echo=echo)
    access = Access(settings.known_hosts, trust_new_host)
    opening = open_board_early(board, options, access)  # the board answers while the module compiles
    try:
        run_build(board, settings, BuildOptions(only=frozenset({"modules", "collect"}), echo=echo))
        return deploy_many([board], settings.out_dir, options, access, opened={board.name: opening})[0]
    finally:
        # when the build failed the deploy never took the connection, which may still be on its way
        opening.add_done_callback(lambda opened: opened.exception() is None and opened.result().close())


def config_pull(board_name: str, settings: Settings, trust_new_host: bool = False) -> str:
    from .deploy.config_pull import pull_config, split_release
    from .pipeline.source import plan_source, tree_version

    with reserved([load_board(board_name, settings.boards_dir)]) as (board,):
        config_file, release = pull_config(board, Access(settings.known_hosts, trust_new_host))
    lines = [
        f"{board_name}: the board runs {release}; its config is in {config_file.name}, "
        f"and boards/{board_name}.local.yaml now builds on it"
    ]
    source_version = tree_version(plan_source(board, settings.cache_dir).tree_on_host)
    if source_version and source_version != split_release(release)[0]:
        lines.append(
            f"warning: kernel.source is {'.'.join(map(str, source_version))} but the board runs {release}: "
            "vermagic matches only when kernel.source is the board's own tree (--kernel-source or "
            f"boards/{board_name}.local.yaml)"
        )
    return "\n".join(lines)


def install_kernel(
    board_name: str, settings: Settings, trust_new_host: bool = False, reboot: bool = False, toolchain: str | None = None
) -> dict:
    from .deploy.kernel_install import install_kernel as install

    board = load_board(board_name, settings.boards_dir)
    with reserved([board.with_toolchain(toolchain) if toolchain else board]) as (board,):
        record = install(board, settings.out_dir, Access(settings.known_hosts, trust_new_host), reboot)
    how = f"tried once ({record['tried']}) and " if record.get("tried") else ""
    print(
        f"{board_name}: installed {record['release']} ({record['kernel']}; initrd {record['initrd']}) "
        f"as extlinux label {record['label']}, {how}now the default (previous default {record['previous_default']!r}); "
        + (f"it runs {record['release']}" if reboot else "reboot the board to run it")
        + "; invoke rollback to undo"
    )
    return record


def rollback(board_name: str, settings: Settings, trust_new_host: bool = False, reboot: bool = False) -> dict:
    from .deploy.kernel_install import rollback as undo
    from .remote.console import REBOOT_LOG

    with reserved([load_board(board_name, settings.boards_dir)]) as (board,):
        record = undo(board, Access(settings.known_hosts, trust_new_host), reboot, board.out_dir(settings.out_dir) / REBOOT_LOG)
    print(
        f"{board_name}: removed {record['release']}; default is {record['previous_default']!r} again"
        + (f"; rebooted, and it runs {record['previous_release']}" if reboot else "")
    )
    return record
