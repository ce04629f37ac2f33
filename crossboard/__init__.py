"""crossboard: cross-build orchestrator for embedded Linux boards."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
