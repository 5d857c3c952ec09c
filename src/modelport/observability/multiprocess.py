"""The directory where `--workers` processes keep their Prometheus values.

Apart from `metrics` because prometheus_client decides how it stores values when it is
first imported: the variable must be set before that, in `serve`, and inherited by the
workers it starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[str]:
    """For `serve --workers N`, before any worker starts (and before this process
    writes a value): a private, empty directory for the workers' metric files, removed
    at exit. A directory the operator set in PROMETHEUS_MULTIPROC_DIR is used instead,
    emptied of an earlier run's files so that old counts do not come back."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.unlink(os.path.join(given, name))
        yield given
        return
    directory = tempfile.mkdtemp(prefix="modelport-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield directory
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)
