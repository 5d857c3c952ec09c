"""The llama.cpp build that scripts/setup makes runs on any CPU of its architecture.

A build for the building machine's own CPU (llama.cpp's default, GGML_NATIVE) passes
every test there and dies with SIGILL, or in AMX's weight repacking, on the next
machine. These look at what was actually built, so that a wheel made with other flags
(an old cache, a hand-made build) fails CI instead of a user's first request."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import pytest

from tests.prerequisites import debian_executable, unavailable


@pytest.fixture(autouse=True)
def the_shipped_flags() -> None:
    """A build with the operator's own flags is not the portable one: locally its checks
    are skipped; in CI (MODELPORT_TEST_REQUIRE_PORTABLE_BUILD=1) it fails, as CI must
    test the build that is shipped."""
    flags = os.environ.get("MODELPORT_LLAMA_CMAKE_ARGS")
    if flags:
        unavailable("PORTABLE_BUILD", f"a build with the operator's own flags (MODELPORT_LLAMA_CMAKE_ARGS={flags})")


X86 = platform.machine().lower() in {"x86_64", "amd64"}


def system_info() -> str:
    import llama_cpp

    return str(llama_cpp.llama_print_system_info().decode())


@pytest.mark.skipif(not X86, reason="x86-64 only")
def test_the_x86_build_targets_avx2_without_avx512_or_amx() -> None:
    info = system_info()
    assert "AVX2 = 1" in info and "FMA = 1" in info
    assert "AVX512" not in info and "AMX" not in info


@pytest.mark.skipif(not X86, reason="x86-64 only")
def test_no_avx512_or_amx_instruction_is_in_the_cpu_kernels() -> None:
    import llama_cpp

    # binutils is installed with apt where missing (as root); else a skip, or in CI a failure.
    objdump = debian_executable("objdump", "binutils", "PORTABLE_BUILD")
    library = Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so"
    code = subprocess.run([objdump, "-d", str(library)], capture_output=True, text=True, check=True).stdout
    assert "%ymm" in code  # the disassembly is real: AVX2 code is there
    assert "%zmm" not in code, "AVX-512 instructions: this build is not the portable one"
    assert "tdpb" not in code and "ldtilecfg" not in code, "AMX instructions: this build is not the portable one"


@pytest.mark.skipif(X86, reason="ARM only")
def test_the_arm_build_is_for_the_armv8_baseline() -> None:
    # With GGML_NATIVE off and no GGML_CPU_ARM_ARCH, only NEON (every ARMv8-A CPU) is assumed.
    info = system_info()
    assert "SVE = 1" not in info and "SME = 1" not in info
