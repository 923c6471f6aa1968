"""Where the app's Hydra configs live: ``robustdiag/conf/``, shipped inside the package.

``ROBUSTDIAG_CONFIG_DIR`` replaces it (a full copy); to *add* config groups or experiments, use Hydra's
own routes instead: ``robustdiag --config-dir my_conf ...`` or ``hydra.searchpath=[file:///abs/my_conf]``.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")
CONFIG_DIR = os.environ.get("ROBUSTDIAG_CONFIG_DIR", PACKAGE_CONFIG_DIR)
