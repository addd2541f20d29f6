"""`clipsearch eval`: metric definitions on hand-computed cases, query sets, the CLI on the
demo catalog (checked against `clipsearch search --json`), comparisons, the regression
gate, reports and their atomicity. Targets parity (local, OpenSearch, HTTP) is in
tests/test_eval_targets.py."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from clipsearch.catalog import Product
from clipsearch.cli import main
from clipsearch.errors import ValidationError
from clipsearch.eval import metrics
from clipsearch.eval.compare import read_configs, regressions
from clipsearch.eval.queries import (
    EvalQuery,
    generate,
    query_from_dict,
    read_queries,
    write_queries,
)
from clipsearch.eval.report import atomic_directory
from clipsearch.eval.runner import evaluate
from clipsearch.eval.targets import QueryFailed, request_body

# ----------------------------------------------------------------------------- metrics


def test_metrics_match_hand_computed_values():
    qrels = {
        "graded": {"a": 2, "b": 1, "never": 0},  # 'never' is judged non-relevant
        "single": {"c": 1},
        "missed": {"z": 1},
        "empty": {"y": 1},  # retrieved nothing: trec_eval would drop it, we score 0
    }
    retrieved = {
        "graded": ["x", "b", "never", "a"],
        "single": ["q", "c"],
        "missed": ["p", "o", "n"],
        "empty": [],
    }
    values = metrics.per_query_metrics(qrels, retrieved, 10)
    assert values["recall@1"] == {"graded": 0.0, "single": 0.0, "missed": 0.0, "empty": 0.0}
    assert values["recall@5"] == {"graded": 1.0, "single": 1.0, "missed": 0.0, "empty": 0.0}
    assert values["mrr@10"] == {"graded": 0.5, "single": 0.5, "missed": 0.0, "empty": 0.0}
    # nDCG, linear gain: DCG = 1/log2(3) + 2/log2(5); ideal = 2/log2(2) + 1/log2(3).
    dcg = 1 / math.log2(3) + 2 / math.log2(5)
    ideal = 2 + 1 / math.log2(3)
    assert values["ndcg@10"]["graded"] == pytest.approx(dcg / ideal, abs=1e-12)
    assert values["ndcg@10"]["single"] == pytest.approx(1 / math.log2(3), abs=1e-12)
    assert values["no_relevant@10"] == {"graded": 0.0, "single": 0.0, "missed": 1.0,
                                        "empty": 1.0}
    # Recall counts relevant products found, not hits: 1 of 2 in the top 2.
    two = metrics.per_query_metrics({"g": {"a": 1, "b": 1}}, {"g": ["a", "x", "b"]}, 10)
    assert two["recall@1"]["g"] == 0.5 and two["recall@5"]["g"] == 1.0


def test_metrics_follow_our_ranking_not_trec_eval_tie_breaking():
    # trec_eval sorts equal scores by document id descending; we pass rank-derived
    # scores, so the order the user saw is the order scored.
    values = metrics.per_query_metrics({"q": {"a": 1}}, {"q": ["a", "b", "c"]}, 10)
    assert values["mrr@10"]["q"] == 1.0
    # Cut at k, and a duplicate id counts once.
    values = metrics.per_query_metrics({"q": {"c": 1}}, {"q": ["a", "a", "b", "c"]}, 2)
    assert values["recall@2"]["q"] == 0.0 and values["mrr@2"]["q"] == 0.0
    assert metrics.metric_names(10) == ["recall@1", "recall@5", "recall@10", "mrr@10",
                                        "ndcg@10"]
    assert metrics.metric_names(3) == ["recall@1", "recall@3", "mrr@3", "ndcg@3"]


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
    values = {str(i): float(i % 2) for i in range(200)}
    low, high = metrics.bootstrap_ci(values, seed=1)
    assert low < 0.5 < high and high - low < 0.2
    assert metrics.bootstrap_ci(values, seed=1) == (low, high)
    assert metrics.bootstrap_ci({"a": 1.0, "b": 1.0}) == (1.0, 1.0)
    assert metrics.latency_percentiles([1, 2, 3, 4, 100]) == {"p50": 3.0, "p95": 80.8}


# ----------------------------------------------------------------------------- query sets


def test_query_file_forms_and_relative_images(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "q.png").write_bytes(b"\x89PNG")
    lines = [
        {"id": "q1", "text": "red ankle boots", "relevant": ["B07X", "B08Y"]},
        {"id": "q2", "image": "img/q.png", "relevant": {"B07X": 2, "B08Y": 0}},
        {"id": "q3", "text": "boots", "image": "img/q.png", "relevant": ["B1"],
         "filters": {"price": {"lte": 80}}},
    ]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    q1, q2, q3 = read_queries(path)
    assert q1 == EvalQuery("q1", {"B07X": 1, "B08Y": 1}, text="red ankle boots")
    assert q2.image == str((tmp_path / "img/q.png").resolve()) and q2.text is None
    assert q2.relevant == {"B07X": 2, "B08Y": 0}
    assert q3.filters == {"price": {"lte": 80}}
    # Written back, paths are relative to the new file and the set reads back equal.
    out = tmp_path / "copy" / "q.jsonl"
    assert write_queries([q1, q2, q3], out) == 3
    assert json.loads(out.read_text().splitlines()[1])["image"] == "../img/q.png"
    assert read_queries(out) == [q1, q2, q3]


def test_bad_query_lines_are_all_reported_with_line_numbers(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "ok", "text": "t", "relevant": ["a"]}),
        "{nope",
        json.dumps({"id": "q2", "relevant": ["a"]}),
        json.dumps({"id": "q3", "text": "t", "relevant": {"a": 0}}),
        json.dumps({"id": "q4", "image": "missing.png", "relevant": ["a"]}),
        json.dumps({"id": "q5", "text": "t", "relevant": ["a"], "filters": {"p": {"x": 1}}}),
        json.dumps({"id": "ok", "text": "t", "relevant": ["a"]}),
        json.dumps({"id": "q7", "text": "t", "relevant": ["a"], "colour": "red"}),
        json.dumps({"id": "q8", "text": "t", "relevant": {"a": 1.5}}),
    ]))
    with pytest.raises(ValidationError) as info:
        read_queries(path)
    message = info.value.message
    assert "8 bad line(s)" in message
    for expected in ["line 2: malformed JSON", "line 3: a query needs text, image or both",
                     "line 4: relevant names no product with a grade above 0",
                     "line 5: image file", "line 6:", "line 7: id 'ok' repeats line 1",
                     "line 8: unknown field(s): colour", "line 9: grade of 'a' must be"]:
        assert expected in message, expected


def _catalog(tmp_path: Path) -> list[Product]:
    products = []
    for i in range(6):
        images = [str(tmp_path / f"p{i}-{j}.png") for j in range(1 + i % 3)]
        products.append(Product(f"p{i}", f"Product {i}", images=tuple(images),
                                attributes={"color": "red"} if i % 2 else {},
                                description=f"About product {i}" if i < 3 else None))
    return products


def test_generators_are_known_item_sets_and_reproducible(tmp_path):
    products = _catalog(tmp_path)
    titles = generate("title2product", products)
    assert [(q.id, q.text, dict(q.relevant)) for q in titles[:2]] == [
        ("title2product:p0", "Product 0", {"p0": 1}), ("title2product:p1", "Product 1",
                                                       {"p1": 1})]
    described = generate("title2product", products, text_field="description")
    assert [q.text for q in described] == ["About product 0", "About product 1",
                                           "About product 2"]
    assert [q.id for q in generate("title2product", products, text_field="color")] == [
        "title2product:p1", "title2product:p3", "title2product:p5"]
    images = generate("image2product", products)
    # Only products with more than one image, queried with a non-main one.
    assert [q.id for q in images] == ["image2product:p1", "image2product:p2",
                                      "image2product:p4", "image2product:p5"]
    for query in images:
        product = next(p for p in products if p.id in query.relevant)
        assert query.image in product.images[1:]
    sample = generate("title2product", products, sample=3, seed=7)
    assert len(sample) == 3 and sample == generate("title2product", products, sample=3,
                                                   seed=7)
    assert sample != generate("title2product", products, sample=3, seed=8)
    with pytest.raises(ValidationError, match="more than one local image"):
        generate("image2product", [Product("a", "t", "x.png")])
    with pytest.raises(ValidationError, match="unknown task"):
        generate("nope", products)


def test_request_body_passes_options_through_but_not_over_the_query():
    query = query_from_dict({"id": "q", "text": "boots", "relevant": ["a"],
                             "filters": {"brand": "Acme"}})
    body = request_body(query, 7, {"mode": "hybrid", "weights": {"text": 1}})
    assert body == {"mode": "hybrid", "weights": {"text": 1}, "text": "boots",
                    "filters": {"brand": "Acme"}, "k": 7}
    with pytest.raises(ValidationError, match="may not set k"):
        request_body(query, 7, {"k": 3})


# ----------------------------------------------------------------------------- gate


def _doc(**values):
    base = {"recall@1": 0.5, "recall@5": 0.8, "recall@10": 0.9, "mrr@10": 0.6,
            "ndcg@10": 0.7, "no_relevant@10": 0.1}
    base.update(values)
    return {"queries": 40, "k": 10, "metrics": base}


def test_regression_gate_names_each_metric_that_fell_too_far():
    baseline = _doc()
    assert regressions(_doc(), baseline, 0.01) == []
    assert regressions(_doc(**{"recall@1": 0.495}), baseline, 0.01) == []  # within allowance
    problems = regressions(_doc(**{"recall@1": 0.45, "ndcg@10": 0.68,
                                   "no_relevant@10": 0.2}), baseline, 0.01)
    assert len(problems) == 3
    assert problems[0].startswith("recall@1 fell from 0.5000 to 0.4500")
    assert problems[1].startswith("ndcg@10 fell from 0.7000 to 0.6800")
    assert problems[2].startswith("no_relevant@10 rose from 0.1000 to 0.2000")
    assert regressions(_doc(**{"recall@1": 0.9}), baseline, 0.0) == []  # gains never fail
    with pytest.raises(ValidationError, match="k=5"):
        regressions(_doc(), {**baseline, "k": 5}, 0.01)
    with pytest.raises(ValidationError, match="metrics"):
        regressions(_doc(), {"k": 10}, 0.01)


def test_compare_config_file_is_validated(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"name": "a"}, {"name": "b", "hnsw_ef_search": 8,
                                                 "request": {"mode": "hybrid"}}]))
    a, b = read_configs(path)
    assert (a.name, dict(a.target), dict(a.request)) == ("a", {}, {})
    assert (dict(b.target), dict(b.request)) == ({"hnsw_ef_search": 8}, {"mode": "hybrid"})
    for bad, message in [([], "non-empty JSON list"), ([{"name": "a"}, {"name": "a"}],
                                                        "used twice"),
                         ([{"name": "a", "weights": 1}], "unknown key"),
                         ([{"name": ""}], "name must be")]:
        path.write_text(json.dumps(bad))
        with pytest.raises(ValidationError, match=message):
            read_configs(path)


# ----------------------------------------------------------------------------- runner


class FakeTarget:
    """A scripted target: answers from a table, fails or interrupts on request."""

    name = "fake"

    def __init__(self, answers, fail=(), interrupt_after=None):
        self.answers, self.fail, self.calls = answers, set(fail), 0
        self.interrupt_after = interrupt_after

    def search(self, body):
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        if body["text"] in self.fail:
            raise QueryFailed("HTTP 400: unknown field 'mode' [mode]")
        return {"results": [{"id": i, "image": None} for i in self.answers[body["text"]]]}

    def image_bytes(self, ref):
        return None

    def close(self):
        pass


def test_failed_queries_are_reported_and_left_out_of_the_metrics():
    queries = [EvalQuery("a", {"x": 1}, text="a"), EvalQuery("b", {"y": 1}, text="b")]
    result = evaluate(queries, FakeTarget({"a": ["x"], "b": ["y"]}, fail={"b"}), 10)
    assert result.metrics["recall@1"] == 1.0
    doc = result.to_json()
    assert doc["queries"] == 1
    assert doc["failed"] == [{"id": "b", "error": "HTTP 400: unknown field 'mode' [mode]"}]
    assert doc["per_query"][0]["rank_of_first_relevant"] == 1


def test_atomic_report_folder_survives_an_interrupt(tmp_path):
    target = tmp_path / "report"
    with atomic_directory(target) as tmp:
        (tmp / "report.md").write_text("first")
    with pytest.raises(KeyboardInterrupt), atomic_directory(target) as tmp:
        (tmp / "report.md").write_text("half")
        raise KeyboardInterrupt
    assert (target / "report.md").read_text() == "first"  # the old report, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temp left over
    with atomic_directory(target) as tmp:
        (tmp / "report.md").write_text("second")
    assert (target / "report.md").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def demo_eval(tmp_path_factory, tiny_clip_dir, demo_catalog_path):
    """The demo catalog indexed with the tiny CLIP, plus a mixed text/image query set."""
    root = tmp_path_factory.mktemp("eval-demo")
    catalog_dir = root / "catalog"
    shutil.copytree(demo_catalog_path.parent, catalog_dir)
    catalog = catalog_dir / "catalog.jsonl"
    base = ["--data-dir", str(root / "data"), "--model", str(tiny_clip_dir)]
    assert main([*base, "ingest", str(catalog), "--no-progress"]) == 0
    for task in ("title2product", "image2product"):
        assert main([*base, "eval", "--generate", task, "--from-catalog", str(catalog),
                     "--sample", "8", "--seed", "3", "--write", str(root / f"{task}.jsonl")]) == 0
    queries = root / "queries.jsonl"
    queries.write_text((root / "title2product.jsonl").read_text()
                       + (root / "image2product.jsonl").read_text())
    return base, queries, root


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_agrees_with_recomputing_from_search_json(capsys, demo_eval):
    base, queries, _ = demo_eval
    code, out, err = run(capsys, *base, "eval", str(queries), "--json", "--no-progress")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["queries"] == 16 and doc["k"] == 10
    assert set(doc["metrics"]) == {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10",
                                   "no_relevant@10"}
    assert set(doc["ci95"]) == set(doc["metrics"])
    assert doc["latency_ms"]["p50"] > 0 and doc["latency_ms"]["p95"] >= doc["latency_ms"]["p50"]
    rows = {row["id"]: row for row in doc["per_query"]}
    hits = {n: [] for n in ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")}
    for query in read_queries(queries):
        argv = ([query.text] if query.text else []) + (
            ["--image", query.image] if query.image else [])
        code, out, _ = run(capsys, *base, "search", *argv, "--k", "10", "--json")
        ids = [r["id"] for r in json.loads(out)["results"]]
        assert rows[query.id]["retrieved"] == ids
        (relevant,) = query.relevant
        rank = ids.index(relevant) + 1 if relevant in ids else None
        assert rows[query.id]["rank_of_first_relevant"] == rank
        # One relevant product: recall@k is a hit, RR is 1/rank, nDCG is 1/log2(rank+1).
        for cut in (1, 5, 10):
            hits[f"recall@{cut}"].append(1.0 if rank and rank <= cut else 0.0)
        hits["mrr@10"].append(1 / rank if rank else 0.0)
        hits["ndcg@10"].append(1 / math.log2(rank + 1) if rank else 0.0)
    for name, values in hits.items():
        assert doc["metrics"][name] == round(sum(values) / len(values), 6), name
    assert doc["metrics"]["no_relevant@10"] == round(1 - doc["metrics"]["recall@10"], 6)


def test_regression_gate_exit_codes(capsys, demo_eval, tmp_path):
    base, queries, _ = demo_eval
    code, out, _ = run(capsys, *base, "eval", str(queries), "--json", "--no-progress")
    current = json.loads(out)
    same = tmp_path / "same.json"
    same.write_text(out)
    code, _, err = run(capsys, *base, "eval", str(queries), "--baseline", str(same),
                       "--no-progress")
    assert code == 0, err
    better = json.loads(out)
    better["metrics"] = {n: (v + 0.05 if not n.startswith("no_relevant") else v - 0.05)
                         for n, v in current["metrics"].items()}
    better["metrics"]["mrr@10"] = current["metrics"]["mrr@10"] + 0.005  # within 0.01
    higher = tmp_path / "better.json"
    higher.write_text(json.dumps(better))
    code, _, err = run(capsys, *base, "eval", str(queries), "--baseline", str(higher),
                       "--max-drop", "0.01", "--no-progress")
    assert code == 1
    failing = [line for line in err.splitlines() if line.startswith("regression:")]
    assert {line.split()[1] for line in failing} == {"recall@1", "recall@5", "recall@10",
                                                     "ndcg@10", "no_relevant@10"}
    code, _, err = run(capsys, *base, "eval", str(queries), "--baseline", str(higher),
                       "--max-drop", "0.06", "--no-progress")
    assert code == 0, err
    code, _, err = run(capsys, *base, "eval", str(queries), "--baseline", str(tmp_path / "x"))
    assert code == 2 and "baseline" in err and "does not exist" in err


def test_compare_and_report(capsys, demo_eval, tmp_path):
    base, queries, _ = demo_eval
    configs = tmp_path / "configs.json"
    configs.write_text(json.dumps([
        {"name": "exact"},
        # HNSW from the first vector on, with a tiny search breadth.
        {"name": "hnsw-ef1", "ann_threshold": 1, "hnsw_ef_search": 1},
        # Options reach the request: in vector mode min_score 1.0 keeps only exact
        # matches. (It no longer empties the list: a title query meets its own
        # product's title vector, and a photo its own image, at a cosine of 1.)
        {"name": "strict", "request": {"mode": "vector", "min_score": 1.0}},
    ]))
    report = tmp_path / "report"
    code, out, err = run(capsys, *base, "eval", str(queries), "--compare", str(configs),
                         "--report", str(report), "--json", "--no-progress")
    assert code == 0, err
    doc = json.loads(out)
    assert [c["name"] for c in doc["configs"]] == ["exact", "hnsw-ef1", "strict"]
    strict = doc["configs"][2]
    assert strict["metrics"]["recall@10"] <= doc["configs"][0]["metrics"]["recall@10"]
    assert strict["options"] == {"mode": "vector", "min_score": 1.0}
    assert all(row["rank_of_first_relevant"] in (None, 1) for row in strict["per_query"])
    assert [(p["a"], p["b"]) for p in doc["pairs"]] == [
        ("exact", "hnsw-ef1"), ("exact", "strict"), ("hnsw-ef1", "strict")]
    assert all(p["a_better"] + p["b_better"] + p["same"] == 16 for p in doc["pairs"])
    files = {p.relative_to(report).as_posix() for p in report.rglob("*") if p.is_file()}
    assert {"report.md", "results.json", "recall_at_k.png", "latency.png"} <= files
    assert any(f.startswith("worst/exact/") for f in files)
    assert json.loads((report / "results.json").read_text()) == doc
    text = (report / "report.md").read_text()
    assert "| metric | exact | hnsw-ef1 | strict |" in text and "Worst queries (exact)" in text
    from PIL import Image

    assert Image.open(report / "recall_at_k.png").size[0] > 100
    # An unknown request option fails each query with the API's own message, and exits 1.
    configs.write_text(json.dumps([{"name": "typo", "request": {"modee": "x"}}]))
    code, out, err = run(capsys, *base, "eval", str(queries), "--compare", str(configs),
                         "--no-progress")
    assert code == 1 and "unknown field 'modee'" in err


def test_interrupted_run_leaves_no_report(capsys, demo_eval, tmp_path, monkeypatch):
    base, queries, _ = demo_eval
    from clipsearch.eval import targets

    calls = {"n": 0}
    original = targets.ServiceTarget.search

    def interrupting(self, body):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, body)

    monkeypatch.setattr(targets.ServiceTarget, "search", interrupting)
    report = tmp_path / "report"
    code, _, err = run(capsys, *base, "eval", str(queries), "--report", str(report),
                       "--no-progress")
    assert code == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []


def test_usage_errors_are_one_line(capsys, demo_eval, tmp_path):
    base, queries, _ = demo_eval
    for argv, message in [
        ([], "give a QUERIES.jsonl file"),
        (["--generate", "title2product"], "--from-catalog"),
        ([str(queries), "--k", "0"], "k must be between 1 and 100"),
        ([str(queries), "--compare", str(tmp_path / "c.json"), "--baseline", str(queries)],
         "--baseline gates a single configuration"),
        ([str(tmp_path / "none.jsonl")], "does not exist"),
    ]:
        code, _, err = run(capsys, *base, "eval", *argv)
        assert code == 2 and err.startswith("error:") and message in err, (argv, err)
