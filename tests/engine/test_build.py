"""The llama.cpp build that scripts/setup makes runs on any CPU of its architecture.

A build for the building machine's own CPU (llama.cpp's default, GGML_NATIVE) passes
every test there and dies with SIGILL, or in AMX's weight repacking, on the next
machine. These look at what was actually built, so that a wheel made with other flags
(an old cache, a hand-made build) fails CI instead of a user's first request."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("MODELPORT_LLAMA_CMAKE_ARGS")), reason="a build with the operator's own flags"
)

X86 = platform.machine().lower() in {"x86_64", "amd64"}


def system_info() -> str:
    import llama_cpp

    return str(llama_cpp.llama_print_system_info().decode())


@pytest.mark.skipif(not X86, reason="x86-64 only")
def test_the_x86_build_targets_avx2_without_avx512_or_amx() -> None:
    info = system_info()
    assert "AVX2 = 1" in info and "FMA = 1" in info
    assert "AVX512" not in info and "AMX" not in info


@pytest.mark.skipif(not X86 or shutil.which("objdump") is None, reason="x86-64 with binutils only")
def test_no_avx512_or_amx_instruction_is_in_the_cpu_kernels() -> None:
    import llama_cpp

    library = Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so"
    code = subprocess.run(["objdump", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    assert "%ymm" in code  # the disassembly is real: AVX2 code is there
    assert "%zmm" not in code, "AVX-512 instructions: this build is not the portable one"
    assert "tdpb" not in code and "ldtilecfg" not in code, "AMX instructions: this build is not the portable one"


@pytest.mark.skipif(X86, reason="ARM only")
def test_the_arm_build_is_for_the_armv8_baseline() -> None:
    # With GGML_NATIVE off and no GGML_CPU_ARM_ARCH, only NEON (every ARMv8-A CPU) is assumed.
    info = system_info()
    assert "SVE = 1" not in info and "SME = 1" not in info
