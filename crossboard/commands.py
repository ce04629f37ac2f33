"""What each invoke task does, behind tasks.py's argument parsing."""
from __future__ import annotations

from .board.load import board_names, load_board
from .settings import Settings
from .toolchain.engine import docker_client
from .toolchain.image import ensure_toolchain
from .toolchain.stream import Tee


def list_boards() -> list[tuple[str, str]]:
    return [(name, load_board(name).spec.description) for name in board_names()]


def toolchain(settings: Settings, echo: bool = True):
    """Build the toolchain image if its build context changed; a no-op otherwise."""
    client = docker_client()
    with Tee(settings.cache_dir / "logs" / "toolchain.log", echo=echo) as tee:
        return ensure_toolchain(client, settings, tee)
