"""crossboard's command line: `invoke --list`. Each task parses its arguments and calls the package."""
from invoke import task

from crossboard import commands
from crossboard.cli import reports_errors
from crossboard.settings import Settings


@task
@reports_errors
def boards(c):
    """List the boards (boards/*.yaml) with a one-line description each."""
    for name, description in commands.list_boards():
        print(f"{name:<14} {description}")


@task(help={
    "base-image": "base to build on (default crossboard/base:trixie, made with debootstrap; or debian:trixie)",
    "mirror": "Debian mirror for debootstrap (default http://deb.debian.org/debian)",
})
@reports_errors
def toolchain(c, base_image=None, mirror=None):
    """Build the pinned toolchain image; a no-op when containers/toolchain/ has not changed."""
    image = commands.toolchain(Settings.from_environment(base_image, mirror))
    print(f"{image.ref} {'built' if image.built_now else 'is current'} ({image.id[7:19]})")
