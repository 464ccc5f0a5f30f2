"""The CPU engine settings: chosen from the CPU's flags, a measurement, or the user's flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynasor_agents.server import _recipe, vllm_command, vllm_environment
from dynasor_agents.server._engine_settings import (
    MEASUREMENT_FILE,
    CpuInfo,
    choose_engine_settings,
    load_measurement,
    save_measurement,
)

AVX2_FLAGS = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi1 bmi2"
CASCADE_LAKE = AVX2_FLAGS + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"
COOPER_LAKE = CASCADE_LAKE + " avx512_bf16"
SAPPHIRE_RAPIDS = COOPER_LAKE + " amx_bf16 amx_tile amx_int8 avx512_fp16"


def write_proc(tmp_path: Path, flags: str, mem_kb: int = 24_000_000) -> tuple[Path, Path]:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\n"
        f"model name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n"
    )
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {mem_kb} kB\nMemFree:        1000 kB\n")
    return cpuinfo, meminfo


@pytest.mark.parametrize(
    ("flags", "dtype"),
    [
        (AVX2_FLAGS, "float32"),  # bf16 emulated: float32 measured ~2x faster at 8+ streams
        (CASCADE_LAKE, "float32"),  # AVX-512 without its BF16 extension still emulates
        (COOPER_LAKE, "bfloat16"),
        (SAPPHIRE_RAPIDS, "bfloat16"),
        ("", "float32"),  # nothing known: the safe choice
    ],
    ids=["avx2", "avx512-no-bf16", "avx512-bf16", "amx", "unknown"],
)
def test_dtype_follows_the_cpu_flags(tmp_path: Path, flags: str, dtype: str) -> None:
    cpu = CpuInfo.read(*write_proc(tmp_path, flags))
    assert choose_engine_settings(cpu).dtype == dtype


@pytest.mark.parametrize(
    ("mem_kb", "gib"), [(4_000_000, 2), (24_000_000, 2), (64 * 2**20, 8), (512 * 2**20, 8)]
)
def test_kv_cache_is_an_eighth_of_memory_within_bounds(
    tmp_path: Path, mem_kb: int, gib: int
) -> None:
    cpu = CpuInfo.read(*write_proc(tmp_path, AVX2_FLAGS, mem_kb))
    settings = choose_engine_settings(cpu)
    assert settings.kv_cache_gib == gib and settings.reserved_cores == 0


def test_reading_a_machine_without_proc_gives_safe_defaults(tmp_path: Path) -> None:
    cpu = CpuInfo.read(tmp_path / "missing", tmp_path / "missing too")
    assert cpu.flags == frozenset() and cpu.memory_gib == 8.0 and cpu.cores >= 1
    assert choose_engine_settings(cpu).dtype == "float32"


def test_a_measurement_on_a_like_cpu_decides_the_dtype(tmp_path: Path) -> None:
    avx2 = CpuInfo.read(*write_proc(tmp_path, AVX2_FLAGS))
    amx = CpuInfo(frozenset(SAPPHIRE_RAPIDS.split()), 2, 8.0)
    model = tmp_path / "model"
    model.mkdir()
    save_measurement(model, avx2, {"float32": 20.0, "bfloat16": 31.0})
    assert load_measurement(model, avx2) == {"float32": 20.0, "bfloat16": 31.0}
    assert choose_engine_settings(avx2, load_measurement(model, avx2)).dtype == "bfloat16"
    assert load_measurement(model, amx) is None  # measured elsewhere: the flags decide
    (model / MEASUREMENT_FILE).write_text("{not json")
    assert load_measurement(model, avx2) is None
    # A measurement of one dtype only does not decide.
    assert choose_engine_settings(avx2, {"bfloat16": 99.0}).dtype == "float32"


@pytest.fixture
def cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_recipe, "is_cpu_build", lambda: True)


def test_the_launcher_uses_the_chosen_settings_and_the_users_flags_win(
    cpu_build: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    avx2 = CpuInfo(frozenset(AVX2_FLAGS.split()), 2, 23.4)
    monkeypatch.setattr(_recipe.CpuInfo, "read", classmethod(lambda cls, *a, **k: avx2))
    model = tmp_path / "model"
    model.mkdir()
    cmd = vllm_command(model)
    assert cmd[cmd.index("--dtype") + 1] == "float32"
    save_measurement(model, avx2, {"float32": 20.0, "bfloat16": 31.0})
    cmd = vllm_command(model)
    assert cmd[cmd.index("--dtype") + 1] == "bfloat16"  # measured faster here
    cmd = vllm_command(model, ["--dtype", "half"])
    assert cmd.count("--dtype") == 1 and cmd[-1] == "half"  # the user's flag wins
    env = vllm_environment(base_env={})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2" and env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    env = vllm_environment(base_env={"VLLM_CPU_KVCACHE_SPACE": "6"})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "6"  # the user's variable wins
