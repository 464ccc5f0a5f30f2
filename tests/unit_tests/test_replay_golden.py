"""``bench replay`` on a fixture bank writes exactly the report it wrote before the
benchmark suite moved out of the library (``tests/fixtures/replay_report.md`` was
written by the code as it stood at commit a99a9c0, on the same bank).

Regenerate only when a change *means* to change replay's numbers or tables:
``python -m tests.unit_tests.test_replay_golden``, and say why in the commit.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from dynasor_bench import bench_main
from dynasor_bench.traces import append_question

from .replay_fakes import random_bank

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "replay_report.md"
_ELAPSED = re.compile(r"replay took [0-9.]+ s")
ARGS = ("--orderings", "20", "--seed", "0", "--workers", "1", "--quiet")


def write_fixture_bank(directory: Path) -> Path:
    """The fixture bank: 8 seeded random questions of 16 paths, two sources."""
    path = directory / "golden.jsonl"
    for question in random_bank(11, questions=8, k=16):
        append_question(path, question)
    return path


def replay_report(directory: Path) -> str:
    """``bench replay`` on the fixture bank; the ``report.md`` it writes, with the one
    figure that varies from run to run (the wall time replay took) masked."""
    pytest.importorskip("matplotlib")
    bank = write_fixture_bank(directory)
    out = directory / "out"
    assert bench_main(["replay", "--bank", str(bank), *ARGS, "--out", str(out)]) == 0
    return _ELAPSED.sub("replay took <T> s", (out / "report.md").read_text(encoding="utf-8"))


def test_replay_report_is_byte_identical_to_the_golden_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert replay_report(tmp_path) == GOLDEN.read_text(encoding="utf-8")


if __name__ == "__main__":  # regenerate the golden report
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN.write_text(replay_report(Path(tmp)), encoding="utf-8")
    print(f"wrote {GOLDEN}", file=sys.stderr)
