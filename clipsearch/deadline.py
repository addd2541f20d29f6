"""One invocation's deadline, and the rule for what may still start before it.

Why: a Lambda cut off by its timeout returns nothing, so SQS redelivers the
whole batch (work already done included) and the error alarm fires. A handler
that watches its deadline instead stops starting work it cannot finish, cuts
calls that would run past it, and answers with exactly what is left undone.

The rule, in the terms `Deadline` uses:

- `left()`: seconds until the end, from the context's remaining time read
  once at handler entry (Lambda's own clock is a fixed deadline, so one
  reading plus a monotonic clock is the same thing and cheaper);
- `reserve`: kept back from *every* call, for answering and flushing metrics;
- `margin`: also kept back from every call that must be followed by another
  one (an encoder call is followed by the write of what it encoded; an S3 read
  by the encoding of what it read), so the follow-up always has room. It should
  cover one such follow-up call;
- `request_time()` = left - reserve: what a final call (an OpenSearch request)
  may take; `work_time()` = left - reserve - margin: what a call with a
  follow-up may take;
- `allows(seconds)`: whether a unit of work needing at least `seconds` may
  start; `timeout(configured)`: the configured timeout, cut to `work_time()`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

# Seconds kept back from every call for answering the invocation and flushing metrics.
RESPONSE_RESERVE_S = 1.0
# The shortest call worth starting: below this, a call fails at once instead.
MIN_CALL_S = 1.0

# The clock deadlines read (monotonic, so wall-clock jumps cannot move a deadline).
# Tests replace it to make time pass without waiting.
clock: Callable[[], float] = time.monotonic


def _now() -> float:
    return clock()


@dataclass(frozen=True)
class Deadline:
    """The end of one invocation on `clock`, with the time kept back from calls."""

    end: float
    margin: float = 0.0
    reserve: float = RESPONSE_RESERVE_S
    clock: Callable[[], float] = field(default=_now, compare=False, repr=False)

    @classmethod
    def after(cls, seconds: float, *, clock: Callable[[], float] = _now,
              **kwargs: Any) -> Deadline:
        """The deadline `seconds` from now."""
        return cls(clock() + seconds, clock=clock, **kwargs)

    @classmethod
    def unbounded(cls) -> Deadline:
        """No deadline (local runs): every check passes, every timeout stays as configured."""
        return cls(math.inf, reserve=0.0)

    @classmethod
    def from_context(cls, context: Any, *, default_s: float,
                     clock: Callable[[], float] = _now) -> Deadline:
        """The Lambda context's remaining time, read now (at handler entry); a context
        without one (a local call) gets `default_s`."""
        get = getattr(context, "get_remaining_time_in_millis", None)
        seconds = get() / 1000.0 if callable(get) else default_s
        return cls.after(seconds, clock=clock)

    def with_margin(self, margin: float) -> Deadline:
        """The same end, keeping `margin` back from calls that have a follow-up."""
        return replace(self, margin=max(0.0, margin))

    def left(self) -> float:
        """Seconds until the end (negative once past it)."""
        return self.end - self.clock()

    def request_time(self) -> float:
        """Seconds a final call (nothing must follow it) may still take."""
        return self.left() - self.reserve

    def work_time(self) -> float:
        """Seconds a call that something must follow may still take."""
        return self.request_time() - self.margin

    def allows(self, seconds: float = MIN_CALL_S) -> bool:
        """Whether work needing `seconds` (one call at its shortest) may start now."""
        return self.work_time() >= seconds

    def timeout(self, configured: float) -> float:
        """`configured`, cut to the time a call with a follow-up may take (never negative)."""
        return max(0.0, min(configured, self.work_time()))

    def describe(self) -> str:
        """For error messages: how much time was left, and what was kept back."""
        return (f"{max(self.left(), 0.0):.1f} s left in the invocation, "
                f"{self.margin + self.reserve:.1f} s of it kept back")
