"""What the CPU and the llama.cpp build can do, where it decides how a model loads."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


@contextlib.contextmanager
def unsafe_repacking_off() -> Iterator[None]:
    """llama.cpp's AMX "extra buffer type" repacks weights for Intel AMX and then
    crashes in llama_decode (ggml-org/llama.cpp #20824). modelport's own build has no
    AMX kernels (scripts/setup), but a build made with GGML_NATIVE on an AMX machine
    does: there, and only there, turn the extra buffer types off (`--no-repack`).
    `Llama` takes no argument for it, so its default model parameters are amended
    while it loads (the engine process loads on one thread)."""
    import llama_cpp.llama_cpp as low_level

    if "AMX" not in _system_info() or not _cpu_has_amx():
        yield
        return
    log.warning("this llama.cpp build uses AMX on an AMX CPU: weight repacking turned off (llama.cpp #20824)")
    defaults = low_level.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    low_level.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        low_level.llama_model_default_params = defaults


def _system_info() -> str:
    import llama_cpp

    info: bytes = llama_cpp.llama_print_system_info()
    return info.decode("utf-8", "replace")


def _cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return any(line.startswith("flags") and " amx_tile" in line for line in cpuinfo)
    except OSError:
        return False
