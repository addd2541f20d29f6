"""Micro-batching: concurrent encode requests share one forward pass.

Why: on a CPU a server that runs one forward pass per request queues every
request behind all the others, while a transformer encodes 8 queries in far
less than 8 times the time of one. `MicroBatchingEncoder` wraps a local
encoder; each kind of input (texts, images) has one worker thread that takes
every request waiting in its queue, up to `max_batch` items, and runs them as
one batch. Requests that arrive while a pass runs are batched without any
wait. The worker waits (at most `max_wait_ms`) only for requests it knows
are coming: ones that entered the encoder but are still being validated or
decoded. A lone request therefore never waits, which matters on a quiet
server, where a fixed wait was pure added latency (docs/benchmarks.md,
"Query speed on a CPU"). Texts and images go separately, since they run
different towers.

What stays per request: validation and image decoding happen on the caller's
thread before queueing, so one bad input fails its own request alone, with
the same error as without batching. The vectors are the ones the wrapped
encoder computes for the batch; they equal one-by-one answers within float
rounding (tests/test_batching.py pins the tolerance).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from clipsearch import config
from clipsearch.encoders import Encoder, check_texts
from clipsearch.encoders.wrapping import EncoderWrapper

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


class LocalEncoder(Encoder, Protocol):
    """An in-process encoder whose image path splits into decode and forward pass."""

    def preprocess_images(self, images: Sequence[bytes | Image.Image]) -> Any: ...

    def encode_pixels(self, pixels: Any) -> np.ndarray: ...


@dataclass
class _Job:
    items: Any  # a list of texts, or one preprocessed pixel batch
    size: int
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


def concat_pixels(batches: Sequence[Any]) -> Any:
    """Join preprocessed pixel batches: tensors, numpy arrays, or dicts of either."""
    first = batches[0]
    if isinstance(first, Mapping):
        return {name: concat_pixels([b[name] for b in batches]) for name in first}
    if hasattr(first, "numpy"):  # a torch tensor
        import torch

        return torch.cat(list(batches))
    import numpy as np

    return np.concatenate(batches)


class _Batcher:
    """One queue and one daemon worker thread running `run(items) -> rows`."""

    def __init__(self, name: str, run: Callable[[list[Any]], np.ndarray],
                 merge: Callable[[list[Any]], Any], max_batch: int, max_wait: float) -> None:
        self.run = run
        self.merge = merge
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.queue: queue.Queue[_Job] = queue.Queue()
        self._arriving = 0  # callers validating or decoding, not queued yet
        self._arriving_lock = threading.Lock()
        self.passes = 0  # forward passes run; tests and benchmarks read it
        self.items = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, prepare: Callable[[], tuple[Any, int]]) -> np.ndarray:
        """Queue what `prepare()` returns (items, size) and wait for its rows.

        `prepare` (validation, decoding) runs on the caller's thread; until its
        job is queued the caller counts as on its way, which is what the
        worker waits for (`_collect`).
        """
        with self._arriving_lock:
            self._arriving += 1
        try:
            job = _Job(*prepare())
            self.queue.put(job)
        finally:
            with self._arriving_lock:
                self._arriving -= 1
        return job.future.result()

    def _collect(self) -> list[_Job]:
        jobs = [self.queue.get()]
        size = jobs[0].size
        deadline = jobs[0].queued_at + self.max_wait
        while size < self.max_batch:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._arriving == 0:
                    break  # nobody else is on the way: do not wait for company
                try:
                    job = self.queue.get(timeout=remaining)
                except queue.Empty:
                    break
            jobs.append(job)
            size += job.size
        return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._collect()
            try:
                rows = self.run(self.merge([job.items for job in jobs]))
            except BaseException as exc:  # every waiting request gets the failure
                for job in jobs:
                    job.future.set_exception(exc)
                continue
            self.passes += 1
            start = 0
            for job in jobs:
                job.future.set_result(rows[start : start + job.size])
                start += job.size
            self.items += start


class MicroBatchingEncoder(EncoderWrapper):
    """The wrapped encoder's protocol, with concurrent calls grouped per tower."""

    def __init__(self, inner: LocalEncoder, *, max_batch: int = config.DEFAULT_MAX_BATCH,
                 max_wait_ms: float = config.DEFAULT_BATCH_WAIT_MS) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        self.inner = inner
        self.max_batch = int(max_batch)
        wait = max_wait_ms / 1000
        self.texts = _Batcher("clipsearch-text-batcher", inner.encode_texts,
                              lambda lists: [t for texts in lists for t in texts],
                              self.max_batch, wait)
        self.images = _Batcher("clipsearch-image-batcher", inner.encode_pixels, concat_pixels,
                               self.max_batch, wait)

    def encode_texts(self, texts: Sequence[str], *, apply_template: bool = True) -> np.ndarray:
        check_texts(texts)  # a bad text fails its own request, before queueing
        if not apply_template:  # rare (raw prompts); not worth a queue of its own
            return self.inner.encode_texts(texts, apply_template=False)
        return self.texts.submit(lambda: (list(texts), len(texts)))

    def encode_images(self, images: Sequence[bytes | Image.Image]) -> np.ndarray:
        import numpy as np

        if not images:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # Decoding runs here, on the request's thread: a bad image fails alone.
        return self.images.submit(lambda: (self.inner.preprocess_images(images), len(images)))
