"""Per-request ids (`modelport.observability.ids`): their shapes, and no two processes drawing the same."""

from __future__ import annotations

import os
import random
import re
import uuid

from modelport.observability import ids


def test_the_ids_have_the_shapes_of_uuid4s() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", ids.hex_id())
    text = ids.uuid_text()
    assert uuid.UUID(text).version == 4 and str(uuid.UUID(text)) == text
    assert len({ids.hex_id() for _ in range(10_000)}) == 10_000


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
