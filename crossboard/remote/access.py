"""How commands reach boards, kept apart from the SSH code so that reading settings loads no paramiko."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..board.load import LoadedBoard

if TYPE_CHECKING:
    from .connection import Cancellation, Session


@dataclass(frozen=True)
class Access:
    """How crossboard reaches boards: the known_hosts file it trusts and records new keys in, and whether
    a key never seen before may be trusted. Every session deploy, kernel installs and config.pull use is
    opened here, so the fast tests can put a fake board behind it (tests/fakes.py)."""

    known_hosts: Path
    trust_new_host: bool = False

    def open(self, board: LoadedBoard, wait_seconds: float = 0, cancellation: Cancellation | None = None) -> Session:
        from .connection import connect

        return connect(
            board.spec.connection,
            known_hosts=self.known_hosts,
            trust_new_host=self.trust_new_host,
            wait_seconds=wait_seconds,
            base_dir=board.project_root,
            cancellation=cancellation,
        )
