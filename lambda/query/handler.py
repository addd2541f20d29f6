"""Placeholder query Lambda: answers 503 until the real handler lands (issue 6).

It exists so the CDK stacks synthesize and deploy end to end before the real
handler is written; the engineer on issue 6 replaces this file. The contract's
error shape is kept so clients already see the final format.
"""

from __future__ import annotations

import json
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Every route: 503 with Retry-After, in the API's error body format."""
    return {
        "statusCode": 503,
        "headers": {"Content-Type": "application/json", "Retry-After": "60"},
        "body": json.dumps({
            "error": "not_implemented",
            "message": "not implemented yet: the query handler has not been deployed",
            "field": None,
        }),
    }
