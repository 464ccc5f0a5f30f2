"""Calibration picks the expected threshold; saved controllers load back; the CLIs run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynasor_agents import (
    ControllerSpec,
    InvalidInputError,
    ProgramState,
    load_calibration,
    load_controller,
)
from dynasor_bench import bench_main
from dynasor_bench.replay._calibrate import (
    choose,
    save_calibration,
    split_bank,
)
from dynasor_bench.replay._methods import ControllerMethod, FixedN, Oracle
from dynasor_bench.replay._report import run_replay
from dynasor_bench.traces._bank import append_question

from .replay_fakes import path, question, random_bank

THRESHOLDS = (0.0, 0.3, 0.5, 1.0)


def threshold_family(k: int) -> list[ControllerMethod]:
    methods = []
    for t in THRESHOLDS:
        terms = [("threshold", {"value": t}), ("max_samples", {"n": k})]
        spec = ControllerSpec.of(terms, first_round=2, round_size=1)
        methods.append(ControllerMethod("step", {"t": t}, spec))
    return methods


def hand_bank() -> list:
    # q1: unanimous, every threshold stops at 2 samples. q2: one stray "2" among six:
    # t=0 stops at 2 samples and answers "2" when the stray comes first (wrong);
    # t=0.3 stops at 3 samples ({1: 2, 2: 1}, Certaindex 0.42) and answers "1";
    # t=0.5 needs 4 samples, t=1.0 a unanimous pair or all six. Fixed N=6 is always right.
    return [
        question("c:1", [path("1", 10)] * 6),
        question("c:2", [path("2", 10)] + [path("1", 10)] * 5),
    ]


def test_calibration_picks_the_cheapest_threshold_that_matches_fixed_k() -> None:
    report = run_replay(
        hand_bank(), [FixedN(n) for n in range(1, 7)] + threshold_family(6), orderings=60
    )
    accuracy = {t: report.find(f"step(t={t:g})").stats().accuracy for t in THRESHOLDS}
    assert accuracy[0.0] < 1.0 and accuracy[0.3] == accuracy[0.5] == accuracy[1.0] == 1.0
    choice = choose(report, "step", drop=0.0)
    assert choice.runs.label == "step(t=0.3)"
    assert choose(report, "step", accuracy=0.5).runs.label == "step(t=0)"
    # With tokens capped at 0.4 x fixed N=6, t=0.3 (<= 4 samples) is the most accurate.
    assert choose(report, "step", ratio=0.4).runs.label == "step(t=0.3)"
    with pytest.raises(InvalidInputError, match="exactly one"):
        choose(report, "step", drop=0.5, ratio=0.5)
    with pytest.raises(InvalidInputError, match="reaches"):
        choose(report, "step", accuracy=1.01)


def test_a_saved_calibration_loads_back_as_the_same_controller(tmp_path: Path) -> None:
    report = run_replay(hand_bank(), [FixedN(6), *threshold_family(6)], orderings=10)
    choice = choose(report, "step", drop=0.0)
    data = save_calibration(tmp_path / "c.json", choice, bank="hand")
    assert data["policy"] == "threshold | max_samples"
    assert data["params"] == {"threshold": {"value": 0.3}, "max_samples": {"n": 6}}
    assert (data["first_round"], data["round_size"]) == (2, 1)
    assert data["measured"]["accuracy"] == 1.0 and data["measured"]["bank"] == "hand"
    ctl = load_controller(tmp_path / "c.json")
    original = choice.runs.method.spec
    assert original is not None
    assert repr(ctl.policy) == repr(original.build().policy) == "threshold(0.3) | max_samples(6)"
    assert (ctl.first_round, ctl.round_size) == (2, 1)
    state = ProgramState(samples=3, certainty=0.42)
    assert ctl.decide(state) == original.build().decide(state)
    spec, measured = load_calibration(tmp_path / "c.json")
    assert spec == original and measured["family"] == "step"


def test_bad_calibration_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not found"):
        load_controller(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    for data, message in [
        ({"policy": "nope | threshold", "params": {}}, "unknown policy"),
        ({"policy": "threshold", "params": {}}, "bad parameters"),
        ({"policy": "threshold", "params": {"threshold": {"value": 2}}}, "threshold"),
        ({"policy": "threshold", "params": {"hopeless": {}}}, "params for"),
        ({"policy": "threshold", "first_round": 0}, "first_round"),
    ]:
        bad.write_text(json.dumps(data))
        with pytest.raises(InvalidInputError, match=message):
            load_controller(bad)


def test_oracle_and_fixed_cannot_all_be_saved(tmp_path: Path) -> None:
    report = run_replay(hand_bank(), [FixedN(6), Oracle()], orderings=2)
    with pytest.raises(InvalidInputError, match="not a controller"):
        save_calibration(tmp_path / "o.json", choose(report, "oracle", drop=0.0))


def test_split_is_seeded_stratified_and_disjoint() -> None:
    bank = random_bank(3, questions=8)
    calib, test = split_bank(bank, seed=5)
    assert {q.id for q in calib}.isdisjoint({q.id for q in test})
    assert len(calib) + len(test) == 8
    assert sorted(q.source for q in calib) == ["easy", "easy", "hard", "hard"]
    assert [q.id for q in split_bank(bank, seed=5)[0]] == [q.id for q in calib]


def write_bank(tmp_path: Path, questions: int = 6) -> Path:
    bank = tmp_path / "toy.jsonl"
    for q in random_bank(11, questions=questions, k=8):
        append_question(bank, q)
    return bank


def test_replay_cli_prints_the_tables_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bank = write_bank(tmp_path)
    methods = "certaindex,deepconf-low,alloc-lowest"
    out = tmp_path / "out"
    args = ["--bank", str(bank), "--orderings", "3", "--methods", methods, "--workers", "1"]
    pytest.importorskip("matplotlib")
    assert bench_main(["replay", *args, "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "## Matching fixed N=8" in printed.out and "| oracle |" in printed.out
    assert "| deepconf-low |" in printed.out and "[replay" in printed.err
    assert (out / "report.md").read_text().startswith("# Replay of toy")
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 0
    assert bench_main(["replay", *args, "--split", "--quiet"]) == 0
    assert "held-out" in capsys.readouterr().out
    with pytest.raises(InvalidInputError, match="unknown method families"):
        bench_main(["replay", *args, "--methods", "nope"])


def test_calibrate_cli_saves_a_loadable_controller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bank = write_bank(tmp_path)
    out = tmp_path / "calib.json"
    argv = ["--bank", str(bank), "--orderings", "3", "--family", "certaindex", "--quiet"]
    assert bench_main(["calibrate", *argv, "--target-ratio", "1.0", "--out", str(out)]) == 0
    assert "saved" in capsys.readouterr().out
    ctl = load_controller(out)
    assert ctl.first_round == 5 and ctl.round_size == 3  # K=8: detect at 5, then the rest
    with pytest.raises(InvalidInputError, match="not a controller"):
        bench_main(["calibrate", *argv, "--family", "deepconf-low", "--target-ratio", "1.0"])
