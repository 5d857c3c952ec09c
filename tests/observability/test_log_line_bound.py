"""Every log line is bounded (issue 21, finding 11: a grammar error wrote the whole grammar,
850 times the request's size): a message or field over `log_max_line_bytes` is cut,
with a marker, in both formats, and a JSON line stays one valid object."""

from __future__ import annotations

import json
import logging

from modelport.observability.logs import JsonFormatter, TextFormatter, cut_to_bytes

LIMIT = 16 * 1024
HUGE = "root ::= " + "(" * 400_000 + '"x"' + ")" * 400_000  # an 800 KB grammar


def _record(message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("modelport.engine", logging.ERROR, __file__, 1, "%s", (message,), None)
    record.modelport_fields = fields
    return record


def test_a_huge_message_makes_a_bounded_text_line_that_says_it_was_cut() -> None:
    line = TextFormatter(LIMIT).format(_record(f"grammar failed to parse: {HUGE}", request_id="r1"))
    assert len(line.encode()) <= LIMIT
    assert line.startswith(line[:30]) and "grammar failed to parse" in line
    assert "truncated" in line and "log_max_line_bytes" in line


def test_a_huge_message_and_field_make_one_bounded_valid_json_object() -> None:
    line = JsonFormatter(LIMIT).format(_record(HUGE, reason=HUGE + '"quoted"' * 1000, request_id="r1", status=500))
    assert len(line.encode()) <= LIMIT
    entry = json.loads(line)
    assert entry["truncated"] is True
    assert (entry["request_id"], entry["status"], entry["level"]) == ("r1", 500, "error")  # the short fields stay
    assert entry["message"].startswith("root ::= (((")


def test_lines_within_the_bound_are_untouched() -> None:
    record = _record("request failed", request_id="r2", status=502)
    assert "truncated" not in json.loads(JsonFormatter(LIMIT).format(record))
    assert TextFormatter(LIMIT).format(record).endswith("request failed request_id=r2 status=502")


def test_cutting_never_splits_a_character() -> None:
    cut = cut_to_bytes("é" * 5000, 1024)
    assert len(cut.encode()) <= 1024
    cut.encode().decode()  # valid UTF-8
    assert cut.startswith("éé")
