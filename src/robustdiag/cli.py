"""``robustdiag``: the Hydra app. ``robustdiag --help`` lists the config groups and examples."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from robustdiag.config import CONFIG_DIR
from robustdiag.launch import register_resolvers

log = logging.getLogger("robustdiag")
register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def app(cfg: DictConfig) -> None:
    """Run one grid point; in a multirun a failed point is recorded and the sweep goes on."""
    from robustdiag.run import run  # heavy imports after Hydra has parsed --help / --cfg

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        run(cfg, out_dir)
    except Exception as err:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        log.error(
            "grid point %s failed: %s: %s (recorded in %s)", out_dir.name, type(err).__name__, err, out_dir
        )
        log.debug("traceback", exc_info=True)


def main() -> None:
    if not Path(CONFIG_DIR, "config.yaml").exists():
        sys.exit(
            f"robustdiag: no config.yaml in {CONFIG_DIR}; set ROBUSTDIAG_CONFIG_DIR to the repo's conf/ folder"
        )
    app()


if __name__ == "__main__":
    main()
