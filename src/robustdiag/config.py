"""Where the app's Hydra configs live (``conf/``; ``ROBUSTDIAG_CONFIG_DIR`` overrides it)."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_DIR = os.environ.get("ROBUSTDIAG_CONFIG_DIR", str(Path(__file__).resolve().parents[2] / "conf"))
