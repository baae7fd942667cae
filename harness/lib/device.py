"""Which device and precision to compute on.

bfloat16 is used for ``dtype: auto`` only where the hardware runs it natively (a GPU, or a CPU with
AVX512-BF16 or AMX); elsewhere bf16 matmuls are emulated and slower than float32.
"""

from __future__ import annotations

from harness.errors import require


def native_bf16() -> bool:
    torch = require("torch")
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_dtype(dtype: str) -> str:
    if dtype == "auto":
        return "bfloat16" if native_bf16() else "float32"
    return dtype


def device() -> str:
    torch = require("torch")
    return "cuda" if torch.cuda.is_available() else "cpu"
