"""A stand-in for the robustdiag app with the same sweep contracts, to test sweep plumbing fast.

Per grid point it "trains" ``epochs`` epochs of ``epoch_s`` seconds, writing a checkpoint per epoch
to ``<cache_dir>/checkpoints/<train hash>/``; a rerun resumes from the last one (logging
``resumed from epoch <k>``) and a job dir whose ``metrics.json`` says ``complete`` is skipped.
Run it as ``python app.py -m x=1,2`` (add ``hydra.searchpath=[file://<repo>/conf]`` for the repo's
launcher presets).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from robustdiag.launch import register_resolvers

log = logging.getLogger("tiny_app")
register_resolvers()


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically (tmp file + rename)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def last_epoch(ckpt_dir: Path) -> int:
    """The last completed epoch with a checkpoint in ``ckpt_dir`` (0 = none)."""
    return max((int(p.stem.split("_")[1]) for p in ckpt_dir.glob("epoch_*.json")), default=0)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    record = out / "metrics.json"
    if record.exists() and json.loads(record.read_text()).get("status") == "complete":
        log.info("skipping: %s holds a complete record", out)
        return
    train_hash = hashlib.sha256(f"{cfg.x}-{cfg.seed}-{cfg.epochs}".encode()).hexdigest()[:12]
    ckpt_dir = Path(cfg.cache_dir) / "checkpoints" / train_hash
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json(record, {"status": "running", "x": cfg.x, "seed": cfg.seed})
    start = last_epoch(ckpt_dir)
    if start > 0:
        log.info("resumed from epoch %d", start)
    for epoch in range(start + 1, cfg.epochs + 1):
        time.sleep(cfg.epoch_s)
        write_json(ckpt_dir / f"epoch_{epoch}.json", {"epoch": epoch})
        log.info("epoch %d done", epoch)
    write_json(
        record,
        {
            "status": "complete",
            "x": cfg.x,
            "seed": cfg.seed,
            "clean/test_acc": 1.0 / (1 + cfg.x),
            "pid": os.getpid(),
        },
    )


if __name__ == "__main__":
    main()
