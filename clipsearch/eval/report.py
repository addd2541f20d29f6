"""The `--report DIR` folder: report.md, results.json, PNG charts and worst-query strips.

Everything is written into a temporary sibling folder that is renamed onto
DIR only once complete, so Ctrl-C (or a crash) leaves either the previous
report or none, never half of one.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from clipsearch.eval.compare import PairComparison, format_table, metric_table
from clipsearch.eval.runner import EvalResult, QueryOutcome

THUMB = 96
STRIP_RESULTS = 5


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder that replaces `target` when the block succeeds."""
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the report from the team
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "report")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_report(directory: Path, results: Sequence[EvalResult], document: dict[str, Any],
                 pairs: Sequence[PairComparison] = (), *, worst: int = 10,
                 title: str = "clipsearch evaluation") -> Path:
    with atomic_directory(directory) as tmp:
        (tmp / "results.json").write_text(json.dumps(document, indent=2) + "\n",
                                          encoding="utf-8")
        charts = _charts(tmp, results)
        lines = [f"# {title}", ""]
        first = results[0]
        lines += [f"{len(first.outcomes)} queries, k = {first.k}. Metrics are means over the "
                  "answered queries with 95% bootstrap confidence intervals (resampling "
                  "queries); latency is measured per query by the client.", ""]
        header, rows = metric_table(results)
        lines += [*_markdown_table(header, rows), ""]
        for chart, caption in charts:
            lines += [f"![{caption}]({chart})", ""]
        if pairs:
            lines += ["## Per-query wins and losses", "",
                      f"On the queries both answered, by {pairs[0].metric}:", ""]
            table = _markdown_table(["A", "B", "A better", "B better", "same"],
                                    [[p.a, p.b, str(p.wins), str(p.losses), str(p.ties)]
                                     for p in pairs])
            lines += [*table, ""]
        for result in results:
            lines += _worst_section(tmp, result, worst)
            if result.failed:
                lines += [f"## Failed queries ({result.name})", ""]
                lines += [f"- `{o.query.id}`: {o.error}" for o in result.failed[:50]] + [""]
        (tmp / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return directory


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    cells = [[str(c).replace("|", "\\|") for c in row] for row in [header, *rows]]
    return (["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in cells[1:]])


def _charts(tmp: Path, results: Sequence[EvalResult]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    out = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for result in results:
        xs = list(range(1, len(result.recall_curve) + 1))
        ax.plot(xs, result.recall_curve, marker="o", label=result.name)
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("recall@k")
    fig.tight_layout()
    fig.savefig(tmp / "recall_at_k.png", dpi=100)
    plt.close(fig)
    out.append(("recall_at_k.png", "recall@k per configuration"))

    fig, ax = plt.subplots(figsize=(6, 4))
    data = [[o.latency_ms for o in r.answered if o.latency_ms is not None] or [math.nan]
            for r in results]
    ax.boxplot(data, whis=(5, 95), showfliers=False)
    ax.set_xticks(range(1, len(results) + 1), [r.name for r in results])
    ax.set_ylabel("ms per query")
    ax.set_title("latency (box: p25-p75, whiskers: p5-p95)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(tmp / "latency.png", dpi=100)
    plt.close(fig)
    out.append(("latency.png", "latency per configuration"))
    return out


def worst_outcomes(result: EvalResult, count: int) -> list[QueryOutcome]:
    """Lowest nDCG first; among equals, those whose relevant product ranked lowest."""
    ndcg = result.per_query.get(f"ndcg@{result.k}", {})
    answered = result.answered
    return sorted(answered, key=lambda o: (ndcg.get(o.query.id, 0.0),
                                           -(o.rank_of_first_relevant or result.k + 1)))[:count]


def _worst_section(tmp: Path, result: EvalResult, count: int) -> list[str]:
    worst = worst_outcomes(result, count)
    if not worst:
        return []
    folder = tmp / "worst" / _safe(result.name)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"## Worst queries ({result.name})", ""]
    for number, outcome in enumerate(worst, start=1):
        query = outcome.query
        what = repr(query.text) if query.text else ""
        if query.image:
            what = (what + " + " if what else "") + f"image `{Path(query.image).name}`"
        rank = outcome.rank_of_first_relevant
        lines.append(f"{number}. `{query.id}` {what}: first relevant at "
                     f"{rank if rank else f'none in top {result.k}'}; relevant "
                     f"{', '.join(sorted(query.relevant))}; got "
                     f"{', '.join(outcome.retrieved[:STRIP_RESULTS]) or 'nothing'}")
        strip = _strip(outcome, result)
        if strip is not None:
            name = f"{number:02d}.png"
            (folder / name).write_bytes(strip)
            lines.append(f"\n   ![query and top results](worst/{_safe(result.name)}/{name})")
    return [*lines, ""]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "config"


def _thumb(data: bytes | None):
    from PIL import Image

    if not data:
        return None
    try:
        image = Image.open(io.BytesIO(data))
        image.thumbnail((THUMB, THUMB))
        return image.convert("RGB")
    except Exception:  # a broken image only loses its thumbnail
        return None


def _strip(outcome: QueryOutcome, result: EvalResult) -> bytes | None:
    """The query image (or a blank for text) then the top results, relevant ones framed
    green. None when no picture at all is available (e.g. a remote API's S3 links)."""
    from PIL import Image, ImageDraw

    query_thumb = None
    if outcome.query.image:
        with contextlib.suppress(OSError):
            query_thumb = _thumb(Path(outcome.query.image).read_bytes())
    target = result.target
    thumbs = [_thumb(target.image_bytes(ref) if target and ref else None)
              for ref in outcome.images[:STRIP_RESULTS]]
    if query_thumb is None and not any(thumbs):
        return None
    pad = 6
    cell = THUMB + 2 * pad
    canvas = Image.new("RGB", (cell * (1 + len(thumbs)) + pad, cell), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if query_thumb is not None:
        canvas.paste(query_thumb, (pad, pad))
    else:
        draw.text((pad, cell // 2 - 6), "text query", fill=(80, 80, 80))
    draw.line([(cell, 0), (cell, cell)], fill=(0, 0, 0), width=2)
    for i, (thumb, pid) in enumerate(zip(thumbs, outcome.retrieved, strict=False), start=1):
        x = cell * i + pad
        if outcome.query.relevant.get(pid, 0) > 0:
            draw.rectangle([x - 4, 2, x + THUMB + 3, cell - 3], outline=(0, 160, 0), width=4)
        if thumb is not None:
            canvas.paste(thumb, (x, pad))
        else:
            draw.text((x, cell // 2 - 6), pid[:14], fill=(80, 80, 80))
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


def print_summary(results: Sequence[EvalResult], pairs: Sequence[PairComparison]) -> str:
    """The human-readable summary the CLI prints without --json."""
    header, rows = metric_table(results)
    text = format_table(header, rows)
    if pairs:
        text += "\n\nper-query wins/losses (" + pairs[0].metric + "):\n"
        text += "\n".join(f"  {p.a} vs {p.b}: {p.wins} better, {p.losses} worse, {p.ties} same"
                          for p in pairs)
    return text
