"""LocalIndex under crashes and overlapping writers (issue #18, classes 7 and 8).

Writers are real processes. Some are killed with SIGKILL at random moments
(mid-transaction, mid graph save, between batches); two run at the same time
in HNSW mode. After each scenario the index must open, answer `describe`
and `knn`, hold exactly the rows that committed, and converge when the
writes are re-run. The model guard must hold from the first written vector.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from clipsearch.errors import ConfigurationError, ModelMismatchError
from clipsearch.index.local import LocalIndex

ROOT = Path(__file__).resolve().parents[1]
DIM = 16

# A writer: batches of random products, HNSW from 50 vectors, a flush (graph
# save) after every batch, so a kill can land anywhere in a write cycle.
WRITER = textwrap.dedent("""
    import sys, numpy as np
    from clipsearch.catalog import Product
    from clipsearch.index import IndexRecord
    from clipsearch.index.local import LocalIndex
    directory, model, seed, batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    DIM = int(sys.argv[5])
    rng = np.random.default_rng(seed)
    index = LocalIndex(directory, ann_threshold=50, hnsw_m=8, ef_construction=16)
    index.set_model(model)
    for b in range(batches):
        records = [IndexRecord(Product(f"p{seed}-{b}-{i}", "t", None,
                                       {"price": float(i), "batch": b}),
                               rng.standard_normal(DIM).astype("float32")) for i in range(40)]
        index.upsert(records)
        index.flush()
        print(b, flush=True)
""")


def _writer(directory: Path, model: str, seed: int, batches: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(directory), model, str(seed),
                             str(batches), str(DIM)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _check_sound(directory: Path, model: str) -> int:
    """Opens, describes, searches (exact and filtered), and agrees with SQLite."""
    index = LocalIndex(directory, ann_threshold=50)
    info = index.describe()
    json.dumps(info)
    count = index.count()
    assert info["count"] == count
    if count:
        assert index.model == model and index.dimension == DIM
        query = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
        hits = index.knn(query, 10)
        assert len(hits) == min(10, count)
        assert len({h.product.id for h in hits}) == len(hits)
        from clipsearch.filters import Condition

        filtered = index.knn(query, 5, (Condition("price", lte=3.0),))
        assert all(h.product.attributes["price"] <= 3.0 for h in filtered)
        for hit in hits:  # every hit is a row of the database
            assert index.get(hit.product.id) is not None
    index.close()
    return count


@pytest.mark.slow
def test_writers_killed_at_random_points_leave_a_sound_index_that_converges(tmp_path):
    rng = random.Random(18)
    directory = tmp_path / "index"
    for round_number in range(4):
        proc = _writer(directory, "model-a", round_number, batches=6)
        time.sleep(rng.uniform(1.0, 4.0))  # import takes ~1 s: kills land anywhere after
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        _check_sound(directory, "model-a")
    # Re-running one writer to the end converges: all its rows, graph saved and reusable.
    proc = _writer(directory, "model-a", 0, batches=6)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    count = _check_sound(directory, "model-a")
    assert count >= 6 * 40
    assert json.loads((directory / "hnsw.json").read_text())["generation"] == \
        LocalIndex(directory)._stored_generation()


@pytest.mark.slow
def test_overlapping_writers_in_hnsw_mode_leave_an_openable_index(tmp_path):
    directory = tmp_path / "index"
    writers = [_writer(directory, "model-a", seed, batches=5) for seed in (1, 2)]
    for proc in writers:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    count = _check_sound(directory, "model-a")
    assert count == 2 * 5 * 40
    # A fresh process reuses or rebuilds the graph, never fails on it.
    index = LocalIndex(directory, ann_threshold=50)
    assert index.mode == "ann" and len(index.knn(np.ones(DIM, np.float32), 20)) == 20


def test_a_writer_with_another_model_cannot_join(tmp_path):
    directory = tmp_path / "index"
    proc = _writer(directory, "model-a", 1, batches=1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    other = LocalIndex(directory)
    with pytest.raises(ConfigurationError, match="holds vectors of model 'model-a'"):
        other.set_model("model-b")
    assert LocalIndex(directory).model == "model-a"


def test_the_model_is_recorded_before_the_first_vector(tmp_path, encoder, demo_products):
    """A crash after the first batch (here: the encoder dies) leaves a guarded index."""
    from clipsearch.service import SearchService

    class DiesAfterOneBatch:
        model_id, dimension = encoder.model_id, encoder.dimension
        calls = 0

        def encode_images(self, images):
            DiesAfterOneBatch.calls += 1
            if DiesAfterOneBatch.calls > 1:
                raise KeyboardInterrupt  # what kill -INT would do mid-ingest
            return encoder.encode_images(images)

        def encode_texts(self, texts):  # titles are embedded too (hybrid search)
            return encoder.encode_texts(texts)

    index = LocalIndex(tmp_path / "index")
    with pytest.raises(KeyboardInterrupt):
        SearchService(DiesAfterOneBatch(), index).ingest(demo_products, batch_size=4)
    assert index.count() == 4 and index.model == encoder.model_id

    class OtherModel:
        model_id, dimension = "another/model", encoder.dimension

    with pytest.raises(ModelMismatchError, match="built with model"):
        SearchService(OtherModel(), LocalIndex(tmp_path / "index"))


def test_a_stale_saved_graph_is_rebuilt_not_fatal(tmp_path):
    """The #18 failure: a graph saved by a writer that missed another's rows."""
    from clipsearch.catalog import Product
    from clipsearch.index import IndexRecord

    rng = np.random.default_rng(1)

    def batch(tag: str) -> list[IndexRecord]:
        return [IndexRecord(Product(f"{tag}{i}", "t"), rng.standard_normal(DIM))
                for i in range(60)]

    first = LocalIndex(tmp_path, ann_threshold=50)
    second = LocalIndex(tmp_path, ann_threshold=50)
    first.upsert(batch("a"))
    first.flush()
    second.upsert(batch("b"))  # second had never seen first's rows: re-checked inside
    second.flush()
    first.upsert(batch("c"))
    first.flush()
    fresh = LocalIndex(tmp_path, ann_threshold=50)
    assert fresh.count() == 180 and len(fresh.knn(rng.standard_normal(DIM), 180)) == 180
    # Even a graph file whose layout contradicts the database is only a warning.
    (tmp_path / "hnsw.json").write_text(json.dumps({"generation": fresh._stored_generation()}))
    np.save(tmp_path / "hnsw-rowids.npy", np.arange(10_000, 10_180))
    again = LocalIndex(tmp_path, ann_threshold=50)
    assert len(again.knn(rng.standard_normal(DIM), 10)) == 10
