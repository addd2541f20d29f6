"""How many CPU threads one forward pass may use, for torch and ONNX Runtime alike.

Why a setting of its own, defaulting to 1 (`config.DEFAULT_THREADS`, env
CLIPSEARCH_THREADS, `--threads`): on a 2-core box where another process holds
a core, torch's default (one thread per core) makes every layer wait for the
descheduled thread, and encoding became 5-15x slower than with one thread
(docs/benchmarks.md, "Threads"). One thread per forward pass, with concurrent
requests micro-batched into one pass, is the robust default on a shared box;
a dedicated machine can raise it.
"""

from __future__ import annotations

import os

from clipsearch.errors import ConfigurationError


def resolve_threads(threads: int) -> int:
    """The thread count to use; 0 means one per core."""
    if threads < 0:
        raise ConfigurationError(f"threads must be 0 (one per core) or more, got {threads}")
    return threads or (os.cpu_count() or 1)


def apply_torch_threads(threads: int) -> int:
    """Set torch's intra-op threads (a process-wide setting); return the count used."""
    import torch

    count = resolve_threads(threads)
    torch.set_num_threads(count)
    return count
