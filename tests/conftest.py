"""Shared fixtures: the real toolchain image (built once, cached by its context hash) and settings."""
import pytest

from crossboard import commands
from crossboard.settings import Settings
from crossboard.toolchain.engine import docker_client


@pytest.fixture(scope="session")
def settings():
    return Settings.from_environment()


@pytest.fixture(scope="session")
def docker():
    return docker_client()


@pytest.fixture(scope="session")
def toolchain_image(settings, docker):
    """The pinned toolchain image: made from nothing (debootstrap + import + build) on a fresh machine."""
    return commands.toolchain(settings, echo=False)
