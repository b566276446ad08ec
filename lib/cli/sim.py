"""``skyops sim``: build the synthetic survey (the command lives with the generator)."""
from __future__ import annotations

from skyops.sim.cli import register

__all__ = ["register"]
