"""Versions of the local index, so a model change never takes search down.

The live index is the directory named by `DATA_DIR/index-current` (a one-line
file), or `DATA_DIR/index` where that file does not exist (every index built
before versioning). `clipsearch reindex --model NEW` re-embeds the catalog
into a fresh `DATA_DIR/indexes/<model>-<time>` directory while the live one
keeps answering, then switches by rewriting the pointer file atomically
(write + rename). The previous version stays on disk: a server started before
the switch still reads it, consistently with the model it loaded.

`DATA_DIR/reindex.json` records a run in progress (target model, source and
target directories); a re-run for the same model resumes into the same
target and only embeds what is missing there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsearch.errors import ConfigurationError, ValidationError

if TYPE_CHECKING:
    from clipsearch.encoders import Encoder
    from clipsearch.index.local import LocalIndex

POINTER = "index-current"
LEGACY_DIR = "index"
VERSIONS_DIR = "indexes"
STATE = "reindex.json"


def current_index_dir(data_dir: Path) -> Path:
    """The live local index directory under `data_dir`."""
    pointer = Path(data_dir) / POINTER
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if name:
            return Path(data_dir) / name
    return Path(data_dir) / LEGACY_DIR


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def switch_to(data_dir: Path, target: Path) -> None:
    """Make `target` the live index: one atomic rename, so readers see old or new."""
    _write_atomically(Path(data_dir) / POINTER,
                      Path(target).relative_to(data_dir).as_posix() + "\n")


def _version_name(model: str) -> str:
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", model.rstrip("/").rsplit("/", 1)[-1])[:40]
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{tail or 'model'}-{digest}-{time.strftime('%Y%m%dT%H%M%S')}"


@dataclass
class ReindexReport:
    """What one `reindex` run did."""

    model: str
    source: Path
    target: Path
    total: int = 0
    resumed: int = 0  # already in the target from an interrupted run
    embedded: int = 0
    removed: int = 0  # deleted from the live index while the run went on
    failed: list[tuple[str, str]] = field(default_factory=list)
    switched: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "source": str(self.source), "target": str(self.target),
                "total": self.total, "resumed": self.resumed, "embedded": self.embedded,
                "removed": self.removed, "switched": self.switched,
                "failed": [{"id": i, "reason": r} for i, r in self.failed]}


def _load_state(data_dir: Path) -> dict[str, str] | None:
    path = Path(data_dir) / STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return state if isinstance(state, dict) else None
    except ValueError:
        return None


def reindex(
    data_dir: Path,
    encoder: Encoder,
    *,
    batch_size: int = 32,
    drop_failed: bool = False,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    open_index: Callable[[Path], LocalIndex] | None = None,
) -> ReindexReport:
    """Re-embed the live local index with `encoder` into a new version and switch to it.

    Products whose image can no longer be read are reported; unless
    `drop_failed`, the switch then does not happen (the new version is kept,
    and a re-run retries just those). `open_index` builds a LocalIndex for a
    directory (the CLI passes its ANN settings).
    """
    from clipsearch.index.local import LocalIndex
    from clipsearch.service import SearchService

    data_dir = Path(data_dir)
    open_index = open_index or LocalIndex
    model = encoder.model_id
    source_dir = current_index_dir(data_dir)
    if not (source_dir / "products.sqlite3").is_file():
        raise ConfigurationError(f"no local index at {source_dir} to reindex; ingest a catalog "
                                 f"with `clipsearch --model {model} ingest CATALOG` instead")
    source = open_index(source_dir)
    if source.model == model:
        raise ValidationError(f"the index at {source_dir} is already built with {model}; "
                              "nothing to do", field="model")
    source_name = source_dir.relative_to(data_dir).as_posix()
    state = _load_state(data_dir)
    if state and state.get("model") == model and state.get("source") == source_name \
            and (data_dir / state.get("target", "")).is_dir():
        target_dir = data_dir / state["target"]
    else:
        if state and state.get("target"):  # another model's run was interrupted: start over
            _remove_version(data_dir, data_dir / state["target"])
        target_dir = data_dir / VERSIONS_DIR / _version_name(model)
        state = {"model": model, "source": source_name,
                 "target": target_dir.relative_to(data_dir).as_posix()}
        target_dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(data_dir / STATE, json.dumps(state, indent=2) + "\n")
    target = open_index(target_dir)
    service = SearchService(encoder, target)  # refuses a target left by another model
    report = ReindexReport(model, source_dir, target_dir)
    done = target.ids()
    report.resumed = len(done)
    failed: dict[str, str] = {}
    # Passes until nothing is missing: products ingested into the live index
    # while a pass ran are picked up by the next one.
    while True:
        wanted = source.ids()
        report.total = len(wanted)
        todo = [p for p in source.iter_products()
                if p.id not in done and p.id not in failed]
        if on_total is not None:
            on_total(report.total)
        if not todo:
            break
        result = service.ingest(todo, batch_size=batch_size, progress=progress)
        report.embedded += result.indexed
        failed.update(result.failed)
        failed.update(result.skipped)
        done = target.ids()
    gone = sorted(done - wanted)
    if gone:
        report.removed = target.delete(gone)
    target.set_model(model)
    target.flush()
    report.failed = sorted(failed.items())
    if report.failed and not drop_failed:
        return report
    switch_to(data_dir, target_dir)
    (data_dir / STATE).unlink(missing_ok=True)
    report.switched = True
    return report


def _remove_version(data_dir: Path, directory: Path) -> None:
    """Delete an abandoned version, never the live one or anything outside data_dir."""
    import shutil

    directory = directory.resolve()
    versions = (Path(data_dir) / VERSIONS_DIR).resolve()
    if directory.parent == versions and directory != current_index_dir(data_dir).resolve():
        shutil.rmtree(directory, ignore_errors=True)
