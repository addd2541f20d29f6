"""Every catalog product ends the bootstrap in exactly one place: indexed, skipped or failed.

Counting what each step did is not enough: when a step is skipped (its
result is already in S3 or in the live index), the failures it found on an
earlier run are not found again, and a product that never reached the index
would vanish from the report. So the run ends by asking the index itself
which catalog products it holds, and explains every one it lacks with the
best witness there is, in this order:

1. the failures found by this run's steps (prepare, upload, transform plan,
   transform output, bulk load), or recorded in the state file;
2. the failures the load recorded in the live index version's `_meta`
   (they survive a lost state directory or a second operator machine);
3. the transform output for that product, parsed again (a rejected image
   carries the handler's error there);
4. otherwise "missing from the index", so nothing is ever lost silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from clipsearch.bootstrap.prepare import Failure

MISSING_REASON = "missing from the index, and no step recorded why"
# Failures written into an index version's _meta (the mapping is no place for a huge list).
META_FAILURES_LIMIT = 1000

Explainer = Callable[[Sequence[str]], Mapping[str, Failure]]


@dataclass
class Accounting:
    """The fate of each catalog product, in catalog order."""

    indexed: list[str] = field(default_factory=list)
    skipped: list[Failure] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.indexed) + len(self.skipped) + len(self.failed)


def unique_ids(*groups: Iterable[str]) -> list[str]:
    """Ids in first-seen order, each once (a catalog may repeat an id; the last line wins)."""
    return list(dict.fromkeys(pid for group in groups for pid in group))


def account(
    catalog_ids: Sequence[str],
    *,
    failures: Iterable[Failure],
    skipped: Iterable[Failure],
    present: Callable[[Sequence[str]], set[str]],
    explainers: Sequence[Explainer] = (),
) -> Accounting:
    """Place each of `catalog_ids` in exactly one bucket.

    A known failure wins over everything (the first one found for an id is
    its reason); a known skip comes next; then `present` (asked once, for the
    ids still undecided) says which are in the index. The rest are explained
    by `explainers`, each asked only for what the previous ones left open.
    """
    failed: dict[str, Failure] = {}
    for failure in failures:
        failed.setdefault(failure.id, failure)
    skips: dict[str, Failure] = {}
    for skip in skipped:
        if skip.id not in failed:
            skips.setdefault(skip.id, skip)
    undecided = [pid for pid in catalog_ids if pid not in failed and pid not in skips]
    found = present(undecided) if undecided else set()
    missing = [pid for pid in undecided if pid not in found]
    for explain in explainers:
        if not missing:
            break
        explained = explain(missing)
        for pid in missing:
            if pid in explained:
                failed[pid] = explained[pid]
        missing = [pid for pid in missing if pid not in failed]
    for pid in missing:
        failed[pid] = Failure(pid, "index", MISSING_REASON)

    result = Accounting()
    for pid in catalog_ids:
        if pid in failed:
            result.failed.append(failed[pid])
        elif pid in skips:
            result.skipped.append(skips[pid])
        else:
            result.indexed.append(pid)
    return result
