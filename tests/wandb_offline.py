"""Read back what an offline W&B run wrote (``<dir>/wandb/offline-run-*/run-*.wandb``).

The ``.wandb`` file is a LevelDB-style log: a 7-byte file header (":W&B", magic 0xBEE1, version 0),
then 32 KiB blocks of records, each with a 7-byte header (CRC32C, little-endian length, type
FULL/FIRST/MIDDLE/LAST); a block tail shorter than a header is zero padding. Each record's payload is a
``wandb_internal_pb2.Record``. W&B >= 0.19 dropped its Python reader, so this small one is used to
check offline runs in tests and by users who want to inspect a run without syncing it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HEADER_LEN = 7
BLOCK_LEN = 32768
FILE_MAGIC = b":W&B"
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """The parts of an offline run a check needs."""

    path: Path  # the offline-run-* directory
    run: dict[str, object] = field(default_factory=dict)  # project, group, job_type, run_id, display name
    config: dict[str, object] = field(default_factory=dict)
    summary: dict[str, object] = field(default_factory=dict)  # nested keys become nested dicts
    history: list[dict[str, object]] = field(default_factory=list)  # one dict per logged step
    files: list[str] = field(default_factory=list)  # paths relative to <run>/files
    artifacts: list[str] = field(default_factory=list)  # "<type>:<name>" and the file names each holds
    exit_code: int | None = None

    def file(self, relative: str) -> Path:
        return self.path / "files" / relative


def iter_payloads(data: bytes) -> Iterator[bytes]:
    """The record payloads of a .wandb log."""
    if data[:4] != FILE_MAGIC:
        raise ValueError(f"not a W&B record log (first bytes {data[:4]!r}, expected {FILE_MAGIC!r})")
    pos, pending = HEADER_LEN, b""
    while pos + HEADER_LEN <= len(data):
        left = BLOCK_LEN - pos % BLOCK_LEN
        if left < HEADER_LEN:  # zero padding at a block end
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER_LEN])
        pos += HEADER_LEN
        if kind == 0 and length == 0:  # preallocated, unwritten space
            break
        chunk = data[pos : pos + length]
        pos += length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""
        else:
            raise ValueError(
                f"corrupt W&B record log: record type {kind} at byte {pos - length - HEADER_LEN}"
            )


def _path_of(item: object) -> list[str]:
    nested = list(getattr(item, "nested_key", []))
    return nested if nested else [str(getattr(item, "key", ""))]


def _set(target: dict[str, object], path: list[str], value: object) -> None:
    for part in path[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = {}
            target[part] = child
        target = child
    target[path[-1]] = value


def _remove(target: dict[str, object], path: list[str]) -> None:
    for part in path[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            return
        target = child
    target.pop(path[-1], None)


def read_offline_run(run_dir: Path) -> OfflineRun:
    """Parse the run-*.wandb file of an ``offline-run-*`` directory."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    logs = sorted(run_dir.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    out = OfflineRun(path=run_dir)
    for payload in iter_payloads(logs[0].read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = record.run
            out.run = {
                "run_id": info.run_id,
                "project": info.project,
                "entity": info.entity,
                "group": info.run_group,
                "job_type": info.job_type,
                "display_name": info.display_name,
            }
            for item in info.config.update:
                _set(out.config, _path_of(item), json.loads(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                _set(out.config, _path_of(item), json.loads(item.value_json))
        elif kind == "summary":
            for item in record.summary.update:
                _set(out.summary, _path_of(item), json.loads(item.value_json))
            for item in record.summary.remove:
                _remove(out.summary, _path_of(item))
        elif kind == "history":
            step: dict[str, object] = {}
            for item in record.history.item:
                _set(step, _path_of(item), json.loads(item.value_json))
            out.history.append(step)
        elif kind == "files":
            out.files.extend(f.path for f in record.files.files)
        elif kind == "artifact":
            out.artifacts.append(f"{record.artifact.type}:{record.artifact.name}")
            out.artifacts.extend(entry.path for entry in record.artifact.manifest.contents)
        elif kind == "exit":
            out.exit_code = int(record.exit.exit_code)
    return out


def find_offline_runs(root: Path) -> list[Path]:
    """Every ``offline-run-*`` directory under ``root`` (e.g. the directory given to wandb.init)."""
    return sorted(p for p in Path(root).rglob("offline-run-*") if p.is_dir())
