"""What the lexical signal reads: the words of a product and of a query.

Both backends index the same four fields (title, description, attribute
values, id) and turn a query into the same bag of words, so a BM25 match on
one backend is a match on the other; only the scores' scale differs.
"""

from __future__ import annotations

import re

from clipsearch.catalog import Product

# A query of a thousand characters should not become a thousand-clause OR.
MAX_QUERY_TERMS = 32
_WORD = re.compile(r"\w+", re.UNICODE)


def query_terms(text: str) -> list[str]:
    """Lower-cased words of a query, deduplicated, in order; punctuation is dropped,
    so nothing a user types can reach a query parser as syntax."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        seen.setdefault(word, None)
    return list(seen)[:MAX_QUERY_TERMS]


def attribute_text(product: Product) -> str:
    """Attribute values as words ("Acme red 12.5 true"): a brand or colour typed into
    the search box should match even though it lives in an attribute."""
    return " ".join(str(v) for v in product.attributes.values())
