"""The identifiers made for every request: its request id, its usage record's, and the
ids of the answers the compatible surfaces shape (`chatcmpl-…`, `msg_…`, `resp_…`).

A usage record's id (`uuid_text`) grows with time: the usage table is unique by it, and
an id drawn at random lands anywhere in that index, so that each insert read pages from
all over a large table. Written by the usage writer into SQLite, a row cost 29 µs of CPU
at 100,000 rows and 52 µs at a million, against 13 to 19 µs throughout for time-ordered
ids (`benchmarks/usage_inserts.py`).

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
import time

_draw = random.Random()
os.register_at_fork(after_in_child=_draw.seed)


def hex_id() -> str:
    """128 random bits as 32 hex digits (what `uuid4().hex` gives)."""
    return f"{_draw.getrandbits(128):032x}"


_LOW_62_BITS = (1 << 62) - 1


def uuid_text() -> str:
    """A time-ordered UUID (version 7, RFC 9562; Python 3.14's `uuid.uuid7`) in its usual
    text form: the Unix time in milliseconds, then 74 random bits, so ids drawn in later
    milliseconds sort after earlier ones."""
    now_ms = time.time_ns() // 1_000_000
    drawn = _draw.getrandbits(74)
    # 48 bits of time | version 7 | 12 drawn bits | variant 0b10 | 62 drawn bits
    value = now_ms << 80 | 0x7 << 76 | (drawn >> 62) << 64 | 0b10 << 62 | drawn & _LOW_62_BITS
    digits = f"{value:032x}"  # as str(uuid.UUID(int=value)) writes it, without building one
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
