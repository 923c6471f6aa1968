"""Run records on disk (the source of truth) and their W&B mirror."""

from robustdiag.records.files import (
    METRICS_FILE,
    PER_LAYER_FILE,
    PER_SAMPLE_FILE,
    RECORD_VERSION,
    RunRecord,
    read_json,
    save_npy,
    write_json_atomic,
    write_table,
)
from robustdiag.records.provenance import provenance
from robustdiag.records.wandb_logger import NullLogger, WandbLogger

__all__ = [
    "METRICS_FILE",
    "PER_LAYER_FILE",
    "PER_SAMPLE_FILE",
    "RECORD_VERSION",
    "NullLogger",
    "RunRecord",
    "WandbLogger",
    "provenance",
    "read_json",
    "save_npy",
    "write_json_atomic",
    "write_table",
]
