"""Data shipped inside the package, found beside the code, never from the working
directory: an installed wheel runs from anywhere (SPEC section 13)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

PACKAGE_DIR: Final = Path(__file__).resolve().parent
# `reflection/pieces.py` is the module that reads pieces, hence the folder's name.
BUILTIN_PIECES_DIR: Final = PACKAGE_DIR / "builtin_pieces"
EVAL_SCENARIOS_DIR: Final = PACKAGE_DIR / "evals" / "scenarios"
