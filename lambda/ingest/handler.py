"""Placeholder ingest Lambda: reports every message as failed until issue 6 lands.

Failing every record (instead of acknowledging it) means nothing uploaded
before the real handler exists is lost: the messages retry and end in the
dead-letter queue, from where they can be redriven once the handler is real.
"""

from __future__ import annotations

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS batch response marking each record failed: 'not implemented yet'."""
    records = event.get("Records") or []
    print(f"not implemented yet: leaving {len(records)} message(s) for retry / the DLQ")
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records
                                  if "messageId" in r]}
