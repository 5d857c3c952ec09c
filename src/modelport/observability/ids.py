"""The identifiers made for every request: its request id, its usage record's, and the
ids of the answers the compatible surfaces shape (`chatcmpl-…`, `msg_…`, `resp_…`).

They are drawn from a `random.Random` of their own, seeded by the OS when the process
starts and again in every forked child, not read from `os.urandom` each time: these ids
name things and guard nothing (whatever is looked up by one is checked against the
caller's account first), and a system call for each of them was a measurable share of a
request's CPU (issue 27). Being its own instance, nobody's `random.seed()` can make two
processes draw the same ids.
"""

from __future__ import annotations

import os
import random
import uuid

_draw = random.Random()
os.register_at_fork(after_in_child=_draw.seed)


def hex_id() -> str:
    """128 random bits as 32 hex digits (what `uuid4().hex` gives)."""
    return f"{_draw.getrandbits(128):032x}"


def uuid_text() -> str:
    """A random (version 4) UUID in its usual text form, as `str(uuid4())` gives."""
    return str(uuid.UUID(int=_draw.getrandbits(128), version=4))
