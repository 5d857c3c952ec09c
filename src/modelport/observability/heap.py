"""The garbage collector, set for a long-running server.

Start-up builds a large heap that lives as long as the process: FastAPI's routes and
their pydantic models, SQLAlchemy's tables, prometheus metrics, the vendors' clients.
CPython's full (generation 2) collection walks every tracked object, so on that heap
each one took 75 to 97 ms, about once a second under load (measured with `gc.callbacks`,
see benchmarks/README.md): those pauses were the gateway's p99. `freeze_startup_heap`
moves everything start-up made into the permanent generation, which collections never
walk; what requests create is collected as before.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Call once start-up is done, before serving. Collecting first frees start-up's
    own garbage rather than freezing it."""
    gc.collect()
    gc.freeze()
