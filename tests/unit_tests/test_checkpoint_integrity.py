"""The packaged models' checksums: sources checked before converting, the converted
checkpoint after, a cached checkpoint cheaply on reuse (its stamp).

No real model: a fake package ships a tiny GGUF file in two parts, and the
conversion is replaced by one that writes two small files.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dynasor_agents import cli
from dynasor_agents.errors import DynasorError
from dynasor_agents.server import _checkpoint
from dynasor_agents.server._checkpoint import (
    PACKAGED_MODELS,
    ChecksumMismatchError,
    PackagedModel,
    ensure_checkpoint,
    file_sha256,
    verify_checkpoint,
)

pytest.importorskip("gguf")  # _join_parts reads the GGUF header with it

NAME = "fake"
CONFIG = b'{"model_type": "llama"}\n'
WEIGHTS = b"\x00\x01" * 512


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _tiny_gguf(architecture: str = "llama") -> bytes:
    """A GGUF v3 file with no tensors and one key, general.architecture."""

    def string(value: bytes) -> bytes:
        return struct.pack("<Q", len(value)) + value

    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)  # version 3, no tensors, one key
    value = struct.pack("<I", 8) + string(architecture.encode())  # type 8: a string
    return header + string(b"general.architecture") + value


@dataclass
class Fake:
    """A fake packaged model installed on sys.path, and counters of the work done."""

    parts: list[Path]
    cache: Path
    converted: int = 0
    hashed: list[str] = field(default_factory=list)
    writes: dict[str, bytes] = field(default_factory=lambda: {"config.json": CONFIG})

    @property
    def target(self) -> Path:
        return self.cache / "fake-model"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    gguf = _tiny_gguf()
    halves = (gguf[:30], gguf[30:])
    site = tmp_path / "site"
    parts = []
    for i, half in enumerate(halves, 1):
        package = site / f"dynasor_fake_weights_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{i}.bin").write_bytes(half)
        parts.append(package / "data" / f"part{i}.bin")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("DYNASOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(
        PACKAGED_MODELS,
        NAME,
        PackagedModel(
            "fake-model",
            tuple((f"dynasor_fake_weights_part{i}", f"data/part{i}.bin") for i in (1, 2)),
            "llama",
            source_sha256=tuple(_sha(half) for half in halves),
            checkpoint_sha256=(
                ("config.json", _sha(CONFIG)),
                ("model.safetensors", _sha(WEIGHTS)),
            ),
        ),
    )
    state = Fake(parts=parts, cache=tmp_path / "cache")

    def convert(source: Path, into: Path) -> None:
        assert source.read_bytes() == gguf  # the parts, joined in order
        state.converted += 1
        (into / "model.safetensors").write_bytes(WEIGHTS)
        for file, data in state.writes.items():
            (into / file).write_bytes(data)

    def counting_sha256(path: Path) -> str:
        state.hashed.append(path.name)
        return file_sha256(path)

    monkeypatch.setattr(_checkpoint, "_convert", convert)
    monkeypatch.setattr(_checkpoint, "file_sha256", counting_sha256)
    return state


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith("."))


def test_converts_once_checks_everything_then_reuses_without_hashing(fake: Fake) -> None:
    path = ensure_checkpoint(model=NAME, log=False)

    assert path == fake.target
    assert fake.converted == 1
    # both parts before converting, both written files after
    assert sorted(fake.hashed) == ["config.json", "model.safetensors", "part1.bin", "part2.bin"]
    stamp = json.loads((path / "dynasor-checkpoint.json").read_text())
    assert stamp["model"] == NAME
    assert stamp["files"]["model.safetensors"]["sha256"] == _sha(WEIGHTS)
    assert stamp["files"]["model.safetensors"]["size"] == len(WEIGHTS)
    assert stamp["source"] == [str(p) for p in fake.parts]
    assert list(stamp["source_sha256"].values()) == list(PACKAGED_MODELS[NAME].source_sha256)
    assert _leftovers(fake.cache) == []

    fake.hashed.clear()
    assert ensure_checkpoint(model=NAME, log=False) == path
    assert fake.converted == 1
    assert fake.hashed == []  # sizes and mtimes unchanged: the stamp vouches for them


def test_a_changed_source_part_fails_before_converting(fake: Fake) -> None:
    expected = PACKAGED_MODELS[NAME].source_sha256[1]
    fake.parts[1].write_bytes(fake.parts[1].read_bytes() + b"!")

    with pytest.raises(ChecksumMismatchError) as caught:
        ensure_checkpoint(model=NAME, log=False)

    err = caught.value
    assert err.path == fake.parts[1]
    assert err.expected == expected
    assert err.actual == file_sha256(fake.parts[1])
    assert str(fake.parts[1]) in str(err) and expected in str(err) and err.actual in str(err)
    assert "model-weights.txt" in str(err)
    assert fake.converted == 0
    assert not fake.target.exists()
    assert _leftovers(fake.cache) == []


def test_a_conversion_writing_other_bytes_leaves_no_checkpoint(fake: Fake) -> None:
    fake.writes["config.json"] = b'{"model_type": "llama", "transformers_version": "9"}\n'

    with pytest.raises(ChecksumMismatchError, match=r"config\.json: sha256 is") as caught:
        ensure_checkpoint(model=NAME, log=False)

    assert caught.value.expected == _sha(CONFIG)
    assert caught.value.actual == _sha(fake.writes["config.json"])
    assert "constraints.txt" in str(caught.value)
    assert not fake.target.exists()
    assert _leftovers(fake.cache) == []


def test_a_conversion_writing_an_unrecorded_file_fails(fake: Fake) -> None:
    fake.writes["special_tokens_map.json"] = b"{}"

    with pytest.raises(ChecksumMismatchError, match="unexpected file") as caught:
        ensure_checkpoint(model=NAME, log=False)

    assert caught.value.path.name == "special_tokens_map.json"
    assert caught.value.expected is None
    assert not fake.target.exists()


def test_a_touched_cached_file_is_hashed_again_and_restamped(fake: Fake) -> None:
    path = ensure_checkpoint(model=NAME, log=False)
    info = (path / "config.json").stat()
    os.utime(path / "config.json", ns=(info.st_atime_ns, info.st_mtime_ns + 5_000_000_000))

    fake.hashed.clear()
    ensure_checkpoint(model=NAME, log=False)
    assert fake.hashed == ["config.json"]  # only the touched file
    stamp = json.loads((path / "dynasor-checkpoint.json").read_text())
    assert stamp["files"]["config.json"]["mtime_ns"] == info.st_mtime_ns + 5_000_000_000
    assert stamp["source"] == [str(p) for p in fake.parts]  # the rest of the stamp is kept

    fake.hashed.clear()
    ensure_checkpoint(model=NAME, log=False)
    assert fake.hashed == []
    assert fake.converted == 1


def test_a_changed_cached_file_fails_naming_it_and_the_digests(fake: Fake) -> None:
    path = ensure_checkpoint(model=NAME, log=False)
    bad = b"\xff" * len(WEIGHTS)  # same size, new mtime
    (path / "model.safetensors").write_bytes(bad)

    with pytest.raises(ChecksumMismatchError) as caught:
        ensure_checkpoint(model=NAME, log=False)

    message = str(caught.value)
    assert message.startswith(f"{path / 'model.safetensors'}: sha256 is {_sha(bad)}, ")
    assert f"expected {_sha(WEIGHTS)}" in message
    assert f"remove {path} to convert the model again" in message
    assert fake.converted == 1


def test_a_missing_cached_file_fails(fake: Fake) -> None:
    path = ensure_checkpoint(model=NAME, log=False)
    (path / "config.json").unlink()

    with pytest.raises(ChecksumMismatchError, match=r"config\.json: missing, expected sha256"):
        ensure_checkpoint(model=NAME, log=False)


def test_another_process_stamp_being_written_is_no_unexpected_file(fake: Fake) -> None:
    path = ensure_checkpoint(model=NAME, log=False)
    (path / ".dynasor-checkpoint.json.4242.tmp").write_text("{")

    assert ensure_checkpoint(model=NAME, log=False) == path


def test_a_stamp_without_digests_is_checked_in_full_once(fake: Fake) -> None:
    """A checkpoint converted before checksums existed: its marker names no files."""
    fake.target.mkdir(parents=True)
    (fake.target / "config.json").write_bytes(CONFIG)
    (fake.target / "model.safetensors").write_bytes(WEIGHTS)
    (fake.target / "dynasor-checkpoint.json").write_text(json.dumps({"model": NAME}))

    ensure_checkpoint(model=NAME, log=False)
    assert sorted(fake.hashed) == ["config.json", "model.safetensors"]
    assert fake.converted == 0

    fake.hashed.clear()
    verify_checkpoint(fake.target, NAME)
    assert fake.hashed == []


def test_prepare_model_reports_a_mismatch_as_an_error(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(PACKAGED_MODELS, "smollm2", PACKAGED_MODELS[NAME])
    fake.parts[0].write_bytes(b"GGUF-but-not-the-upload")

    assert cli._run(["prepare-model", "smollm2"]) == 2

    err = capsys.readouterr().err
    assert err.startswith(f"dynasor-agents: error: {fake.parts[0]}: sha256 is ")
    assert isinstance(ChecksumMismatchError(Path("x"), "a", "b"), DynasorError)


def test_logs_the_conversion_on_stderr(fake: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    ensure_checkpoint(model=NAME)

    out, err = capsys.readouterr()
    assert out == ""
    assert f"[dynasor] converting {NAME} (model.gguf) to a checkpoint in {fake.target}" in err


def _hex64(digest: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{64}", digest) is not None


@pytest.mark.parametrize("name", ["smollm2", "qwen2.5-coder-0.5b"])
def test_every_packaged_model_records_its_digests(name: str) -> None:
    model = PACKAGED_MODELS[name]
    assert len(model.source_sha256) == len(model.parts)
    files = dict(model.checkpoint_sha256)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert all(_hex64(d) for d in (*model.source_sha256, *files.values()))
