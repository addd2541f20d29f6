"""How many CPU threads one forward pass may use, for torch and ONNX Runtime.

Why a setting of its own (`config.DEFAULT_THREADS`, env CLIPSEARCH_THREADS,
`--threads`), and why its default `auto` depends on the runtime:

- **torch** gets 1 thread. Its OpenMP workers spin while they wait for work,
  so on a 2-core box where another process holds a core every layer waits
  for the descheduled thread: two threads made encoding 5-15x slower than
  one (docs/benchmarks.md, "Threads").
- **ONNX Runtime** gets one thread per core. Its workers are created with
  spinning off (`OnnxEncoder._session`), so a busy neighbour costs a little,
  not a collapse, and an idle box gets both cores: measured 1.3-1.8x faster
  than one thread idle and no slower under a competing process
  (docs/benchmarks.md, "Query speed on a CPU").

A number always wins over `auto`; 0 means one per core.
"""

from __future__ import annotations

import os

from clipsearch.errors import ConfigurationError

AUTO = "auto"


def parse_threads(value: str | int | None) -> int | None:
    """`auto` (or None) -> None; a count (0 = one per core) -> that int; else a clear error."""
    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"threads must be 'auto' or a number (0 = one per core), "
                                 f"got {value!r}") from None
    if count < 0:
        raise ConfigurationError(f"threads must be 'auto', 0 (one per core) or more, got {count}")
    return count


def resolve_threads(threads: str | int | None, runtime: str = "torch") -> int:
    """The thread count to use on `runtime` ("torch" or "onnx"); see the module docstring."""
    count = parse_threads(threads)
    cores = os.cpu_count() or 1
    if count is None:
        return cores if runtime == "onnx" else 1
    return count or cores


def apply_torch_threads(threads: str | int | None) -> int:
    """Set torch's intra-op threads (a process-wide setting); return the count used."""
    import torch

    count = resolve_threads(threads, "torch")
    torch.set_num_threads(count)
    return count
