"""Find a complete run record by what it is (configuration + code), not by where it was written.

Hydra names job folders by position and time, so a relaunch into a new sweep directory, or a grid whose
list gained a value, cannot find earlier results by folder. Every complete record is therefore also
listed under ``<cache_dir>/records/<config hash>-<code>.json``; a later run of the same configuration
with the same code copies that record (and the tables it lists) instead of recomputing it.

"The same code" is the git commit of a clean checkout, or the package version outside git; a run from
a checkout with uncommitted changes neither reuses nor offers records (its code cannot be named).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from robustdiag.records import schema
from robustdiag.records.files import read_json, write_json_atomic

log = logging.getLogger(__name__)

INDEX_DIR = "records"
REUSED_FROM_KEY = "run/reused_from"


def code_identity(commit: str, dirty: bool, version: str) -> str | None:
    """What names the code a record came from: the clean commit, the version outside git, else None."""
    if dirty:
        return None
    return commit if commit and commit != "unknown" else f"v{version}"


class RecordIndex:
    """``<cache_dir>/records/``: one small JSON file per (configuration, code) pointing at a complete record."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = Path(cache_dir) / INDEX_DIR

    def _entry(self, identity: str, code: str) -> Path:
        return self.root / f"{identity}-{code[:16]}.json"

    def add(self, identity: str, code: str | None, run_dir: Path) -> None:
        """List the complete record in ``run_dir`` (best effort: an index that cannot be written only costs reuse)."""
        if code is None:
            return
        try:
            write_json_atomic(self._entry(identity, code), {"run_dir": str(Path(run_dir).resolve())})
        except OSError as err:
            log.warning(
                "could not list the record in %s (%s); later relaunches will recompute it", self.root, err
            )

    def find(self, identity: str, code: str | None, exclude: Path) -> Path | None:
        """A folder other than ``exclude`` holding a complete record of ``identity`` made by ``code``."""
        if code is None:
            return None
        entry = read_json(self._entry(identity, code))
        if not entry or not isinstance(entry.get("run_dir"), str):
            return None
        run_dir = Path(entry["run_dir"])
        if run_dir.resolve() == Path(exclude).resolve():
            return None
        record = read_json(run_dir / schema.METRICS_FILE)
        if not (record and record.get("config/hash") == identity and schema.is_complete(run_dir, record)):
            return None
        return run_dir


def copy_record(source: Path, target: Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Copy the complete record in ``source`` (its tables first, ``metrics.json`` last) into ``target``.

    ``updates`` (e.g. where it came from) are merged into the copied record, which is returned."""
    record = json.loads((source / schema.METRICS_FILE).read_text())
    target.mkdir(parents=True, exist_ok=True)
    for name in schema.split_keys(record.get(schema.FILES_KEY)):
        shutil.copy2(source / name, target / name)
    record.update(updates)
    write_json_atomic(target / schema.METRICS_FILE, record)
    return record
