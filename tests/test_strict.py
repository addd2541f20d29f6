"""clipsearch.strict: the JSON and text rules every entry point applies (issue #18)."""

from __future__ import annotations

import json
import time

import pytest

from clipsearch import config, strict
from clipsearch.errors import ValidationError
from tests import hostile


@pytest.mark.parametrize("text", [hostile.deep_json(100_000), hostile.deep_json(33),
                                  hostile.deep_json(5_000, "{"),
                                  '{"a": ' + hostile.deep_json(40) + "}"])
def test_deep_nesting_is_refused_without_recursion(text):
    with pytest.raises(json.JSONDecodeError, match="nested deeper than"):
        strict.loads(text)


def test_depth_limit_is_exact_and_strings_do_not_count():
    assert strict.loads(hostile.deep_json(config.JSON_MAX_DEPTH)) is not None
    assert strict.loads('{"a": "' + "[" * 10_000 + '"}') == {"a": "[" * 10_000}
    assert strict.loads('["\\"[[[[", 1]') == ['"[[[[', 1]


@pytest.mark.parametrize("number", hostile.BAD_NUMBERS)
def test_non_finite_and_huge_numbers_are_refused(number):
    for doc in (number, f'{{"price": {number}}}', f"[1, {number}]"):
        with pytest.raises(json.JSONDecodeError) as info:
            strict.loads(doc)
        assert "finite" in info.value.msg or "outside" in info.value.msg


def test_numbers_in_range_parse_exactly():
    edge = config.JSON_MAX_INT
    assert strict.loads(f"[{edge}, {-edge}, 1.5e300, -0.0, 0]") == [edge, -edge, 1.5e300, -0.0, 0]


def test_giant_integer_literal_is_cheap():
    started = time.perf_counter()
    with pytest.raises(json.JSONDecodeError):
        strict.loads("9" * 1_000_000)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("text", hostile.JSON_LONE_SURROGATES)
def test_lone_surrogates_are_refused_in_values_and_keys(text):
    for doc in (text, f"[{text}]", f"{{{text}: 1}}", f'{{"a": {{"b": [{text}]}}}}'):
        with pytest.raises(json.JSONDecodeError, match="well-formed Unicode"):
            strict.loads(doc)


def test_valid_unicode_and_pairs_pass():
    assert strict.loads('"\\ud83d\\ude00 caf\\u00e9"') == "\U0001f600 café"
    assert strict.loads("\"\U0001f600\"".encode()) == "\U0001f600"


def test_bytes_must_be_utf8():
    with pytest.raises(json.JSONDecodeError, match="not UTF-8"):
        strict.loads(b'{"a": "\xff"}')


@pytest.mark.parametrize("value", hostile.LONE_SURROGATES)
def test_check_text_and_scrub(value):
    with pytest.raises(ValidationError, match="well-formed Unicode") as info:
        strict.check_text(value, "q")
    assert info.value.field == "q"
    cleaned = strict.scrub({"message": value, value: [value]})
    json.dumps(cleaned, ensure_ascii=False).encode("utf-8")  # always encodable
    assert strict.check_text("caf\u00e9 \U0001f600", "q")
