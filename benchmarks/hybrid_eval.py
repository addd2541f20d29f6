"""`vector` against `hybrid` with the evaluation harness, and the title vector's prompt.

Runs `clipsearch` itself (the CLI's `main`, in process) on a catalog drawn
in code: N coloured-shape products with two photos each (the main image and
a close-up) and a title naming the shape, a number and the colour, as
benchmarks/eval_throughput.py draws them, plus a short description. Steps,
each echoed as the command it is:

1. a random-weight CLIP (`clipsearch model random --preset vit-b-32`);
2. `clipsearch ingest` into `index/` (every image and the title embedded,
   the title with the query prompt template, as the code does);
3. two variants of that index, same vectors otherwise:
   `index-title-bare/` (title vectors re-embedded *without* the template)
   and `index-main-only/` (the layout before #14: one vector per product,
   the main image's; the SQLite FTS5 words stay, the harness reads them
   only in lexical and hybrid mode);
4. `clipsearch eval --generate title2product|image2product --from-catalog`
   (and title2product `--field description`);
5. `clipsearch eval --compare` over the configurations written to
   `configs-title.json` / `configs-image.json`.

With RANDOM weights nothing here says how good retrieval is with CLIP; see
docs/evaluation.md ("vector against hybrid") for what it can show.

    .venv/bin/python -m benchmarks.hybrid_eval --work /tmp/hyeval --products 300
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import time
from dataclasses import replace
from pathlib import Path

from clipsearch.catalog import write_jsonl
from clipsearch.cli import main as clipsearch
from clipsearch.index import TITLE_KEY, IndexRecord, image_vector_key
from clipsearch.index.versions import current_index_dir


def run(*argv: str) -> None:
    print(f"\n$ clipsearch {shlex.join(argv)}   # load average {os.getloadavg()[0]:.1f}",
          flush=True)
    started = time.perf_counter()
    code = clipsearch(list(argv))
    print(f"# exit {code}, {time.perf_counter() - started:.0f} s", flush=True)
    if code not in (0, 1):  # 1: a regression gate or failed queries, reported above
        raise SystemExit(code)


def variant(source: Path, target: Path, rewrite) -> None:
    """Copy the ingested index and replace every product's vectors with `rewrite`'s."""
    from clipsearch.index.local import LocalIndex

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, symlinks=True)
    index = LocalIndex(current_index_dir(target))
    products = list(index.iter_products())
    stored = index.get_vectors([p.id for p in products])
    result = index.upsert(rewrite(products, stored))
    assert not result.failures, result.failures[:3]
    index.flush()
    index.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--preset", default="vit-b-32", choices=["tiny", "vit-b-32"])
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    from benchmarks.eval_throughput import make_catalog

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"model-{args.preset}"
    if not model.exists():
        run("model", "random", str(model), "--preset", args.preset)
    catalog = work / "catalog.jsonl"
    if not catalog.exists():
        (work / "images").mkdir(exist_ok=True)
        products = make_catalog(work / "images", args.products)
        products = [replace(p, description=f"A {p.title.split()[0]} print, item {p.id[1:]}.")
                    for p in products]
        write_jsonl(products, catalog, base_dir=work)
    common = ("--model", str(model))
    full = work / "index"
    if not full.exists():
        run(*common, "--data-dir", str(full), "ingest", str(catalog), "--no-progress")

    from clipsearch.encoders import load_encoder
    from clipsearch.encoders.onnx import with_runtime

    encoder = with_runtime(load_encoder(str(model)))

    def bare_titles(products, stored):
        bare = encoder.encode_texts([p.title for p in products], apply_template=False)
        return [IndexRecord(p, {**stored[p.id], TITLE_KEY: vector})
                for p, vector in zip(products, bare, strict=True)]

    def main_only(products, stored):
        return [IndexRecord(p, {key: vec for key, vec in stored[p.id].items()
                                if key == image_vector_key(p.images[0])})
                for p in products]

    variant(full, work / "index-title-bare", bare_titles)
    variant(full, work / "index-main-only", main_only)

    sets = {"title": ("title2product", "--field", "title"),
            "description": ("title2product", "--field", "description"),
            "image": ("image2product",)}
    for name, (task, *field) in sets.items():
        run(*common, "eval", "--generate", task, "--from-catalog", str(catalog), *field,
            "--write", str(work / f"queries-{name}.jsonl"))

    text_configs = [
        {"name": "vector", "request": {"mode": "vector"}},
        {"name": "hybrid", "request": {"mode": "hybrid"}},
        {"name": "lexical", "request": {"mode": "lexical"}},
        {"name": "vector, title w/o prompt", "data_dir": str(work / "index-title-bare"),
         "request": {"mode": "vector"}},
        {"name": "hybrid, title w/o prompt", "data_dir": str(work / "index-title-bare"),
         "request": {"mode": "hybrid"}},
        {"name": "vector, main image only", "data_dir": str(work / "index-main-only"),
         "request": {"mode": "vector"}},
    ]
    image_configs = [
        {"name": "vector", "request": {"mode": "vector"}},
        {"name": "vector, main image only", "data_dir": str(work / "index-main-only"),
         "request": {"mode": "vector"}},
    ]
    (work / "configs-text.json").write_text(json.dumps(text_configs, indent=1))
    (work / "configs-image.json").write_text(json.dumps(image_configs, indent=1))
    for name, configs in (("title", "text"), ("description", "text"), ("image", "image")):
        run(*common, "--data-dir", str(full), "eval", str(work / f"queries-{name}.jsonl"),
            "--compare", str(work / f"configs-{configs}.json"), "--k", str(args.k),
            "--no-progress")


if __name__ == "__main__":
    main()
