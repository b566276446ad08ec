"""`skyops archive`: placeholder until its module lands."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
