"""Engine settings for vLLM on a CPU, chosen from what the CPU can do.

vLLM's CPU backend computes bfloat16 natively only where the CPU has the
AVX-512 BF16 (or AMX-BF16) instructions; elsewhere it emulates it. On a 2-core
AVX2 machine without AVX-512 (``docs/results.md``, engine speed per dtype),
float32 decoded about twice as fast as bfloat16 with 8 or more requests running
(46-52 against 20-30 tokens/s), which is how reasoning programs load the engine;
bfloat16 was faster only for a single stream. So:

* **dtype**: ``bfloat16`` where the CPU has ``avx512_bf16`` or ``amx_bf16``,
  else ``float32``. A measurement wins over the rule: ``dynasor-agents bench
  engine`` times both dtypes side by side and saves the result beside the
  converted model (:data:`MEASUREMENT_FILE`); :func:`choose_engine_settings`
  then takes the faster dtype when the measurement was made on a CPU with the
  same features.
* **KV cache**: ``VLLM_CPU_KVCACHE_SPACE`` GiB, an eighth of the memory, at
  least 2 and at most 8 (float32 needs twice the bytes per token of bfloat16).
* **threads**: vLLM binds one OpenMP thread per usable core; no core is
  reserved (``VLLM_CPU_NUM_OF_RESERVED_CPU=0``): on the small machines the CPU
  build is for, a reserved core would idle half the compute.

A flag or variable the user gives wins over all of this (the launcher only adds
what is missing). Nothing here starts a process or imports vLLM.

Example:
    >>> avx2 = CpuInfo(flags=frozenset({"avx", "avx2", "fma"}), cores=2, memory_gib=23.4)
    >>> choose_engine_settings(avx2)
    EngineSettings(dtype='float32', kv_cache_gib=2, reserved_cores=0, reason='no AVX-512 BF16 \
or AMX-BF16: bfloat16 would be emulated')
    >>> sapphire = CpuInfo(flags=frozenset({"avx512f", "avx512_bf16", "amx_bf16"}), cores=32,
    ...                    memory_gib=256.0)
    >>> choose_engine_settings(sapphire).dtype, choose_engine_settings(sapphire).kv_cache_gib
    ('bfloat16', 8)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "MEASUREMENT_FILE",
    "BF16_FLAGS",
    "CpuInfo",
    "Dtype",
    "EngineSettings",
    "choose_engine_settings",
    "load_measurement",
    "save_measurement",
]

Dtype = Literal["bfloat16", "float32"]

BF16_FLAGS: Final = frozenset({"avx512_bf16", "amx_bf16"})
"""``/proc/cpuinfo`` flags with which the CPU computes bfloat16 natively."""

MEASUREMENT_FILE: Final = "dynasor-engine.json"
"""Name of the measured throughput per dtype, saved in a converted model's directory."""

_FEATURES: Final = frozenset(
    {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
    | BF16_FLAGS
    | {"amx_tile", "amx_int8", "avx512_fp16"}
)


@dataclass(frozen=True)
class CpuInfo:
    """What the engine settings depend on.

    Attributes:
        flags: The CPU's feature flags (``/proc/cpuinfo``).
        cores: Cores this process may run on.
        memory_gib: Total memory in GiB.
    """

    flags: frozenset[str]
    cores: int
    memory_gib: float

    @classmethod
    def read(
        cls, cpuinfo: str | Path = "/proc/cpuinfo", meminfo: str | Path = "/proc/meminfo"
    ) -> CpuInfo:
        """This machine's CPU (Linux ``/proc``; no flags and 8 GiB where it is missing)."""
        flags: frozenset[str] = frozenset()
        try:
            for line in Path(cpuinfo).read_text(encoding="utf-8").splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    flags = frozenset(value.split())
                    break
        except OSError:
            pass
        memory = 8.0
        try:
            for line in Path(meminfo).read_text(encoding="utf-8").splitlines():
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) / 2**20  # kB -> GiB
                    break
        except (OSError, ValueError, IndexError):
            pass
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        return cls(flags=flags, cores=cores or os.cpu_count() or 1, memory_gib=memory)

    @property
    def bf16_native(self) -> bool:
        """Whether the CPU computes bfloat16 natively."""
        return bool(self.flags & BF16_FLAGS)

    @property
    def fingerprint(self) -> str:
        """A short digest of the features that decide engine speed (not the core count).

        Example:
            >>> a = CpuInfo(frozenset({"avx2", "sse"}), 2, 8.0)
            >>> a.fingerprint == CpuInfo(frozenset({"avx2"}), 64, 512.0).fingerprint
            True
        """
        relevant = ",".join(sorted(self.flags & _FEATURES))
        return hashlib.sha256(relevant.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EngineSettings:
    """The settings the launcher gives a CPU vLLM (unless the user gave their own).

    Attributes:
        dtype: ``--dtype``.
        kv_cache_gib: ``VLLM_CPU_KVCACHE_SPACE``.
        reserved_cores: ``VLLM_CPU_NUM_OF_RESERVED_CPU``.
        reason: Why this dtype (shown when the server starts).
    """

    dtype: Dtype
    kv_cache_gib: int
    reserved_cores: int
    reason: str


def choose_engine_settings(
    cpu: CpuInfo, measured: Mapping[str, float] | None = None
) -> EngineSettings:
    """The engine settings for ``cpu``.

    Args:
        cpu: The machine (:meth:`CpuInfo.read`).
        measured: Decode throughput (tokens/s) per dtype measured on a CPU with
            the same features (:func:`load_measurement`); the faster dtype wins.

    Example:
        >>> avx2 = CpuInfo(frozenset({"avx2"}), 2, 16.0)
        >>> choose_engine_settings(avx2, {"float32": 41.0, "bfloat16": 52.5}).reason
        'measured on this CPU: bfloat16 52.5 tokens/s, float32 41.0 tokens/s'
    """
    kv = max(2, min(8, int(cpu.memory_gib // 8)))
    timed = {d: float(t) for d, t in (measured or {}).items() if d in ("bfloat16", "float32")}
    if len(timed) == 2:
        dtype: Dtype = "bfloat16" if timed["bfloat16"] > timed["float32"] else "float32"
        shown = ", ".join(f"{d} {t:.1f} tokens/s" for d, t in sorted(timed.items()))
        return EngineSettings(dtype, kv, 0, f"measured on this CPU: {shown}")
    if cpu.bf16_native:
        return EngineSettings("bfloat16", kv, 0, "the CPU computes bfloat16 natively")
    reason = "no AVX-512 BF16 or AMX-BF16: bfloat16 would be emulated"
    return EngineSettings("float32", kv, 0, reason)


def save_measurement(
    model_dir: str | Path, cpu: CpuInfo, tokens_per_second: Mapping[str, float]
) -> Path:
    """Save throughput per dtype measured on ``cpu`` beside a converted model."""
    path = Path(model_dir) / MEASUREMENT_FILE
    data = {"cpu": cpu.fingerprint, "tokens_per_second": dict(tokens_per_second)}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def load_measurement(model_dir: str | Path, cpu: CpuInfo) -> dict[str, float] | None:
    """The throughput per dtype saved for this model on a CPU like ``cpu``, if any.

    A measurement from a CPU with other features, or a file that is not one,
    is ignored (``None``).

    Example:
        >>> import tempfile
        >>> cpu, other = CpuInfo(frozenset({"avx2"}), 2, 8.0), CpuInfo(frozenset(), 2, 8.0)
        >>> model = tempfile.mkdtemp()
        >>> _ = save_measurement(model, cpu, {"float32": 50.0, "bfloat16": 25.0})
        >>> load_measurement(model, cpu), load_measurement(model, other)
        ({'float32': 50.0, 'bfloat16': 25.0}, None)
    """
    try:
        data = json.loads((Path(model_dir) / MEASUREMENT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("cpu") != cpu.fingerprint:
        return None
    speeds = data.get("tokens_per_second")
    if not isinstance(speeds, dict):
        return None
    try:
        return {str(k): float(v) for k, v in speeds.items()}
    except (TypeError, ValueError):
        return None
