"""What the service left out of a call or changed (x-modelport-dropped) is in the
request's log line too, as the service reported it."""

from __future__ import annotations

import logging

import pytest

from modelport.observability.logs import request_finished
from modelport.observability.requests import RequestRecord, current_request, leaving_out


def _line_fields(caplog: pytest.LogCaptureFixture, dropped: tuple[str, ...]) -> dict[str, object]:
    record = RequestRecord(request_id="r1", method="POST", scope={}, status=200, deployment="d")
    token = current_request.set(record)
    try:
        leaving_out(dropped)
    finally:
        current_request.reset(token)
    with caplog.at_level(logging.INFO, logger="modelport.requests"):
        request_finished(record, 0.01, access_log=True)
    [line] = [entry for entry in caplog.records if entry.name == "modelport.requests"]
    fields: dict[str, object] = line.modelport_fields  # type: ignore[attr-defined]
    return fields


def test_the_log_line_names_what_was_dropped(caplog: pytest.LogCaptureFixture) -> None:
    fields = _line_fields(caplog, ("reasoning_effort", "max_tokens=clamped:3990"))
    assert fields["dropped"] == "reasoning_effort, max_tokens=clamped:3990"


def test_nothing_dropped_is_no_field_value(caplog: pytest.LogCaptureFixture) -> None:
    assert _line_fields(caplog, ())["dropped"] is None
