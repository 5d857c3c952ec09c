"""Per-request ids (`modelport.observability.ids`): their shapes, and no two processes drawing the same."""

from __future__ import annotations

import os
import random
import re
import time
import uuid

from modelport.observability import ids


def test_the_ids_have_their_shapes() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", ids.hex_id())
    assert len({ids.hex_id() for _ in range(10_000)}) == 10_000
    before = time.time_ns() // 1_000_000
    text = ids.uuid_text()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(text)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
    assert before <= parsed.int >> 80 <= after  # its first 48 bits: the time in milliseconds
    assert len({ids.uuid_text() for _ in range(10_000)}) == 10_000


def test_usage_ids_drawn_later_sort_after_earlier_ones() -> None:
    # The usage table is unique by these ids: drawn in order, they are added at the end
    # of its index rather than anywhere in it.
    drawn = []
    for _ in range(5):
        drawn.append(ids.uuid_text())
        started = time.monotonic()
        while time.monotonic() - started < 0.002:  # into a later millisecond
            pass
    assert drawn == sorted(drawn)


def test_a_forked_worker_draws_other_ids_than_its_parent() -> None:
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first ids, to the parent
        os.close(reader)
        os.write(writer, " ".join(ids.hex_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        childs = pipe.read().split()
    os.waitpid(pid, 0)
    assert len(childs) == 3 and not set(childs) & {ids.hex_id() for _ in range(3)}


def test_seeding_the_random_module_does_not_repeat_ids() -> None:
    random.seed(0)
    first = ids.hex_id()
    random.seed(0)
    assert ids.hex_id() != first
