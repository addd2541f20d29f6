"""A base for encoders that wrap another one (micro-batching, another runtime).

The wrapped encoder keeps the identity a search depends on: model id,
dimension and prompt template (the query cache keys on them), so the
wrapper forwards them instead of each wrapper restating them.
"""

from __future__ import annotations

from typing import Any


class EncoderWrapper:
    """Forwards `model_id`, `dimension` and `prompt_template` to `self.inner`."""

    inner: Any

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def prompt_template(self) -> str:
        return self.inner.prompt_template
