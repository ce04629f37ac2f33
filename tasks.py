"""crossboard's command line: `invoke --list`. Each task parses its arguments and calls the package."""

from invoke import Collection, task

from crossboard import commands
from crossboard.cli import reports_errors, seconds_option
from crossboard.errors import UserError
from crossboard.settings import Settings


@task
@reports_errors
def boards(c):
    """List the boards (boards/*.yaml) with a one-line description each."""
    listed = commands.list_boards(settings_of(c))
    width = max((len(name) for name, _ in listed), default=0)
    for name, description in listed:
        print(f"{name:<{width}}  {description}")
    mistakes = [description.removeprefix("INVALID: ") for _, description in listed if description.startswith("INVALID: ")]
    if mistakes:
        more = len(mistakes) - 1
        raise UserError(mistakes[0] + (f" (and {more} more board files with mistakes, above)" if more else ""))


def settings_of(c, base_image=None, mirror=None, apt_proxy=None) -> Settings:
    """The settings, invoke.yaml's `crossboard:` section among them (docs/settings.md)."""
    return Settings.from_environment(base_image, mirror, config=c.config.get("crossboard"), apt_proxy=apt_proxy)


OUTPUT_HELP = {
    "verbose": "show the tools' own output too (it always goes to the logs)",
    "quiet": "progress as a plain line a minute instead of a bar, as in CI logs",
}


@task(
    help={
        "profile": "the toolchain profile to build (containers/toolchain/profiles/<name>/); default: all",
        "base-image": "base to build on (default crossboard/base:trixie, made with debootstrap; or debian:trixie)",
        "mirror": "Debian mirror for debootstrap and every apt in the image (default http://deb.debian.org/debian; "
        "a snapshot.debian.org/archive/debian/<time>/ URL gives a lock's exact versions back)",
        "apt-proxy": "an apt caching proxy, http://HOST:PORT (apt-cacher-ng), for debootstrap and the image's apt",
        "update-lock": "build the image at what the archive offers now and rewrite packages.lock to it; shows the diff",
        "export": "write the profile's image to this file (docker save format) for a machine that cannot build it",
        "import": "load a toolchain image from a file written by --export",
        **OUTPUT_HELP,
    }
)
@reports_errors
def toolchain(
    c,
    profile="all",
    base_image=None,
    mirror=None,
    apt_proxy=None,
    update_lock=False,
    export=None,
    import_=None,
    verbose=False,
    quiet=False,
):
    """Build the toolchain profiles' images at their locked versions; a no-op for each that has its image."""
    settings = settings_of(c, base_image, mirror, apt_proxy)
    if export or import_:
        for tag in commands.carry_toolchain(settings, profile, export, import_):
            print(f"{tag}: {'written to ' + export if export else 'loaded'}")
        return
    remember = bool(base_image or mirror or apt_proxy)
    if update_lock:
        for name, changed in commands.update_locks(settings, profile, verbose=verbose, plain=quiet).items():
            print(f"{name}: packages.lock " + (f"rewritten, {len(changed)} lines changed:" if changed else "unchanged"))
            for line in changed:
                print(f"  {line}")
    images = commands.toolchain(settings, profile, verbose=verbose, plain=quiet, remember=remember)
    for image in images:
        print(f"{image.ref} {'built' if image.built_now else 'is current'} ({image.id[7:19]}, base {settings.base_image})")
    if remember:
        print("later commands use this base, mirror and proxy")


@task(
    help={
        "board": "board name (boards/<name>.yaml); default: the settings' board (qemu-arm64)",
        "dry-run": "print the plan (commands and where they run) and do nothing",
        "strict-toolchain": "fail when a tool is newer than the kernel's minimum, not only older",
        "only": "comma-separated steps to run: source,toolchain-check,configure,dtbs,kernel,devel,modules,apps,collect",
        "runtime": "docker (default: the pinned toolchain image; on a remote engine as volumes), host (already inside the "
        "image) or volumes (no bind mounts: the build runs on the engine's named volumes)",
        "kernel-source": "override the board's kernel source: debian:PKG, path:DIR, tarball:URL@SHA256, git:URL@REF, "
        "or devel:BUNDLE (a kernel-devel tarball a build wrote: modules and apps only)",
        "app-builder": "auto (cross where installed, else cargo in the image), cross or cargo",
        "toolchain": "build with this toolchain profile into out/<board>@<profile>/, or `all`: every profile, then a table",
        **OUTPUT_HELP,
    }
)
@reports_errors
def build(
    c,
    board=None,
    dry_run=False,
    strict_toolchain=False,
    only="",
    runtime="docker",
    kernel_source=None,
    verbose=False,
    quiet=False,
    app_builder="auto",
    toolchain=None,
):
    """Build the board's Rust-enabled kernel, DTBs, modules and apps into out/<board>/ with a manifest."""
    from crossboard.pipeline.context import BuildOptions

    options = BuildOptions(
        dry_run=dry_run,
        strict_toolchain=strict_toolchain,
        verbose=verbose,
        plain=quiet,
        only=frozenset(filter(None, only.split(","))),
        app_builder=app_builder,
    )
    settings = settings_of(c)
    board = board or settings.board
    manifest = commands.build(board, settings, options, runtime, kernel_source, toolchain)
    if manifest is not None:
        print(f"{board}: built {manifest.kernel_release}, {len(manifest.artifacts)} artifacts in {manifest.out_dir}")


@task(help={"board": "board name; default: the settings' board (qemu-arm64)"})
@reports_errors
def ide(c, board=None):
    """Write rust-project.json and compile_commands.json into the board's module folders, for the editor."""
    settings = settings_of(c)
    board = board or settings.board
    for file in commands.ide(board, settings):
        print(f"{board}: wrote {file}")
    print("open a module folder in an editor with rust-analyzer; paths point into ~/.cache/crossboard and the project")


@task(help={"board": "also check the board file and its kernel's minimum tool versions"})
@reports_errors
def doctor(c, board=None):
    """Check the Docker engine, the toolchain image and its tool versions; say what to do about failures."""
    commands.doctor(settings_of(c), board)


@task(
    help={
        "board": "board name, or several separated by commas (deployed in parallel)",
        "trust-new-host": "accept and record a host key never seen before (a changed key is always refused)",
        "keep-loaded": "leave the modules loaded",
        "module": "load only these modules (comma-separated names); apps are then not run",
        "wait": "seconds to keep retrying the connection while a board boots (default 30)",
        "kernel": "install the built kernel, DTBs and modules on the board as a new default extlinux label",
        "reboot": "with --kernel: reboot into it, wait for SSH (deploy.reboot_timeout) and check uname -r",
        "twin": "deploy to the board's twin (invoke qemu.up --board X) instead of the board",
        "toolchain": "deploy the build made with this toolchain profile (out/<board>@<profile>/, from build --toolchain)",
    }
)
@reports_errors
def deploy(
    c,
    board=None,
    trust_new_host=False,
    keep_loaded=False,
    module="",
    wait=None,
    kernel=False,
    reboot=False,
    twin=False,
    toolchain=None,
):
    """Push out/<board>/ over SSH, check each module against the running kernel, load it, check dmesg, run the apps."""
    from crossboard.deploy.run import DeployOptions

    options = DeployOptions(
        keep_loaded=keep_loaded,
        wait_seconds=seconds_option(wait, "--wait", default=30),
        modules=frozenset(filter(None, module.split(","))),
    )
    settings = settings_of(c)
    commands.deploy(board or settings.board, settings, options, trust_new_host, kernel, reboot, twin, toolchain)


@task(
    name="up",
    help={
        "board": "a virtual board (one with a `virtual:` section), or a hardware board: its twin",
        "fresh": "U-Boot shape: start from the disk as made, discarding every change made on the board",
        "toolchain": "the build made with this toolchain profile (out/<board>@<profile>/, from build --toolchain)",
    },
)
@reports_errors
def qemu_up(c, board=None, fresh=False, toolchain=None):
    """Boot the virtual board, or a hardware board's twin, with its built kernel; returns once SSH answers."""
    from crossboard.virtual import qemu
    from crossboard.virtual.twin import what_a_twin_cannot_show

    settings = settings_of(c)
    vboard = commands.virtual_board(board or settings.board, settings, toolchain)
    if vboard.twin:
        print(what_a_twin_cannot_show(vboard.board), flush=True)
    pid = qemu.up(vboard, fresh=fresh)
    print(qemu.status(vboard) if pid else "")


@task(
    name="status",
    help={
        "board": "a virtual board",
        "toolchain": "the build made with this toolchain profile (out/<board>@<profile>/, from build --toolchain)",
    },
)
@reports_errors
def qemu_status(c, board=None, toolchain=None):
    """Say whether the virtual board runs, on which port, and whether SSH answers."""
    from crossboard.virtual import qemu

    settings = settings_of(c)
    print(qemu.status(commands.virtual_board(board or settings.board, settings, toolchain)))


@task(
    name="reset",
    help={
        "board": "a virtual board",
        "toolchain": "the build made with this toolchain profile (out/<board>@<profile>/, from build --toolchain)",
    },
)
@reports_errors
def qemu_reset(c, board=None, toolchain=None):
    """Power-cycle the running virtual board (QEMU's system_reset), as deploy.power_cycle does."""
    from crossboard.virtual import qemu

    settings = settings_of(c)
    qemu.reset(commands.virtual_board(board or settings.board, settings, toolchain))
    print(f"{board or settings.board}: reset")


@task(
    name="down",
    help={
        "board": "a virtual board",
        "toolchain": "the build made with this toolchain profile (out/<board>@<profile>/, from build --toolchain)",
    },
)
@reports_errors
def qemu_down(c, board=None, toolchain=None):
    """Stop the virtual board."""
    from crossboard.virtual import qemu

    settings = settings_of(c)
    stopped = qemu.down(commands.virtual_board(board or settings.board, settings, toolchain))
    print(f"{board or settings.board}: {'stopped' if stopped else 'was not running'}")


@task(
    help={
        "board": "board name",
        "module": "the out-of-tree module (its folder name) to rebuild, push and reload",
        "trust-new-host": "accept and record a host key never seen before",
        "twin": "work on the board's twin (invoke qemu.up --board X) instead of the board",
        "toolchain": "the build made with this toolchain profile (out/<board>@<profile>/, from build --toolchain)",
    }
)
@reports_errors
def dev(c, module, board=None, trust_new_host=False, twin=False, toolchain=None):
    """Inner loop: rebuild one out-of-tree module, push it, reload it (left loaded), show its new kernel messages."""
    settings = settings_of(c)
    commands.dev(board or settings.board, module, settings, trust_new_host, twin=twin, toolchain=toolchain)


@task(name="pull", help={"board": "board name", "trust-new-host": "accept and record a host key never seen before"})
@reports_errors
def config_pull(c, board=None, trust_new_host=False):
    """Build against the board's running kernel: store its config and release in boards/<board>.local.yaml."""
    settings = settings_of(c)
    print(commands.config_pull(board or settings.board, settings, trust_new_host))


@task(
    help={
        "board": "board name",
        "trust-new-host": "accept and record a host key never seen before",
        "reboot": "reboot, wait for SSH and check the board runs the kernel it ran before the install",
    }
)
@reports_errors
def rollback(c, board=None, trust_new_host=False, reboot=False):
    """Undo invoke deploy --kernel: the previous default label again, crossboard's kernel and modules removed."""
    settings = settings_of(c)
    commands.rollback(board or settings.board, settings, trust_new_host, reboot)


@task(name="module", help={"name": "the module's name (a Rust identifier)", "board": "the board file to add it to"})
@reports_errors
def new_module(c, name, board=None):
    """Make modules/NAME, an out-of-tree Rust module with load and unload messages, and add it to the board file."""
    settings = settings_of(c)
    print(commands.new("module", name, board or settings.board, settings))


@task(name="app", help={"name": "the app's name (a cargo package name)", "board": "the board file to add it to"})
@reports_errors
def new_app(c, name, board=None):
    """Make apps/NAME, a cargo app that says where it runs, and add it to the board file."""
    settings = settings_of(c)
    print(commands.new("app", name, board or settings.board, settings))


namespace = Collection(boards, toolchain, doctor, build, deploy, dev, rollback, ide)
namespace.add_collection(Collection("qemu", qemu_up, qemu_status, qemu_reset, qemu_down))
namespace.add_collection(Collection("config", config_pull))
namespace.add_collection(Collection("new", new_module, new_app))
