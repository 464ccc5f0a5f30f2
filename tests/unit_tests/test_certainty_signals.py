"""Tests for the certainty signals beside answer entropy.

DeepConf token/group/tail confidence, self-certainty, reward certainty, probe
agreement, confidence-weighted voting and confidence filtering.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionTokenLogprob
from openai.types.chat.chat_completion import ChoiceLogprobs
from openai.types.chat.chat_completion_token_logprob import TopLogprob
from openai.types.completion_choice import Logprobs

from dynasor_agents.certainty import (
    DEFAULT_HEDGE_WORDS,
    ProbeAgreement,
    TraceConfidence,
    bottom_group_confidence,
    certaindex,
    cluster_answers,
    filter_confident,
    group_confidences,
    hedges,
    logprob_matrix,
    lowest_group_confidence,
    probe_agreement,
    reward_certainty,
    self_certainty,
    tail_confidence,
    token_confidences,
    trace_confidence,
    weighted_votes,
)
from dynasor_agents.errors import InvalidInputError

LN = math.log

# ----------------------------------------------------------------------------- adapters


def _chat_item(*top: float, token: str = "x") -> ChatCompletionTokenLogprob:
    return ChatCompletionTokenLogprob(
        token=token,
        logprob=top[0] if top else -0.1,
        top_logprobs=[TopLogprob(token=f"t{j}", logprob=lp) for j, lp in enumerate(top)],
    )


def test_matrix_from_plain_floats_sorts_rows_and_pads_ragged() -> None:
    m = logprob_matrix([[-2.0, -0.5], [-0.1], [-1.0, -3.0, -0.2]])
    assert m.dtype == np.float64
    assert m.tolist() == [[-0.5, -2.0, -np.inf], [-0.1, -np.inf, -np.inf], [-0.2, -1.0, -3.0]]


def test_matrix_from_numpy_array() -> None:
    m = logprob_matrix(np.array([[-1.0, -0.5], [-0.3, -0.4]], dtype=np.float32))
    assert m.dtype == np.float64
    np.testing.assert_allclose(m, [[-0.5, -1.0], [-0.3, -0.4]], rtol=1e-6)


def test_matrix_from_openai_chat_objects() -> None:
    content = [_chat_item(-0.1, -2.5), _chat_item(), _chat_item(-0.7, -0.9)]
    expected = [[-0.1, -2.5], [-0.7, -0.9]]  # the position without top_logprobs is skipped
    assert logprob_matrix(content).tolist() == expected
    assert logprob_matrix(ChoiceLogprobs(content=content)).tolist() == expected


def test_matrix_from_chat_dicts() -> None:
    chat = {
        "content": [
            {"token": "a", "logprob": -0.2, "top_logprobs": [{"token": "a", "logprob": -0.2}]},
            {"token": "b", "logprob": -1.0, "top_logprobs": None},
        ]
    }
    assert logprob_matrix(chat).tolist() == [[-0.2]]


def test_matrix_from_completions_top_logprobs() -> None:
    top: list[dict[str, float] | None] = [{"a": -1.0, "b": -0.5}, None, {"c": -0.2, "d": -3.0}]
    expected = [[-0.5, -1.0], [-0.2, -3.0]]
    assert logprob_matrix(top).tolist() == expected
    lp = Logprobs(
        tokens=["b", "c"],
        token_logprobs=[-0.5, -0.2],
        top_logprobs=[{"a": -1.0, "b": -0.5}, {"c": -0.2, "d": -3.0}],
    )
    assert logprob_matrix(lp).tolist() == expected
    assert logprob_matrix({"top_logprobs": top, "tokens": ["b", "x", "c"]}).tolist() == expected


def test_matrix_from_vllm_logprob_objects() -> None:
    rows = [{11: SimpleNamespace(logprob=-0.3), 12: SimpleNamespace(logprob=-1.3)}]
    assert logprob_matrix(rows).tolist() == [[-0.3, -1.3]]


def test_matrix_k_keeps_the_k_largest_and_rejects_short_rows() -> None:
    assert logprob_matrix([[-3.0, -0.1, -1.0]], k=2).tolist() == [[-0.1, -1.0]]
    with pytest.raises(InvalidInputError, match=r"k=3 .*first has 2"):
        logprob_matrix([[-0.1, -0.2, -0.3], [-0.1, -0.2]], k=3)
    with pytest.raises(InvalidInputError, match="k must be a positive int"):
        logprob_matrix([[-0.1]], k=0)


def test_matrix_treats_minus_inf_as_absent() -> None:
    assert logprob_matrix([[-0.5, -np.inf], [-np.inf]]).tolist() == [[-0.5, -np.inf]]


def test_matrix_tolerates_rounding_above_zero() -> None:
    assert logprob_matrix([[1e-9, -1.0]]).tolist() == [[0.0, -1.0]]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([], "empty"),
        ([None, None], "no position carries top logprobs"),
        ([[]], "no position carries top logprobs"),
        (None, "None"),
        (ChoiceLogprobs(content=None), "content is None"),
        ({"top_logprobs": None}, "top_logprobs is None"),
        ({"foo": 1}, "must hold 'content' or 'top_logprobs'"),
        ("-0.5", "sequence of positions"),
        (3.0, "sequence of positions"),
        ([-0.5, -1.0], r"logprobs\[0\] is a number"),
        ([[-0.5, float("nan")]], "NaN"),
        ([[-0.5, float("inf")]], r"\+inf"),
        ([[0.5, -1.0]], "must be <= 0"),
        ([["a"]], r"logprobs\[0\]\[0\] must be a logprob"),
        ([[True]], "must be a logprob"),
        ([{"a": "x"}], "must be a logprob"),
        (np.zeros((0, 3)), "2-D, numeric, non-empty"),
        (np.zeros(3), "2-D, numeric, non-empty"),
        (np.array([["a"]]), "2-D, numeric, non-empty"),
        (np.array([[-0.1, np.nan]]), "NaN"),
    ],
)
def test_matrix_rejects_bad_input(bad: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        logprob_matrix(bad)


# ----------------------------------------------------------------------------- DeepConf


def test_token_confidence_hand_computed() -> None:
    conf = token_confidences([[LN(0.5), LN(0.25)], [LN(0.9), LN(0.05), LN(0.05)], [0.0]])
    assert conf.tolist() == pytest.approx([(LN(2) + LN(4)) / 2, -(LN(0.9) + 2 * LN(0.05)) / 3, 0.0])
    assert not np.signbit(conf[2])


def test_token_confidence_of_chat_response_equals_plain_floats() -> None:
    content = [_chat_item(-0.1, -2.5, -3.0), _chat_item(-0.7, -0.9, -1.5)]
    floats = [[-0.1, -2.5, -3.0], [-0.7, -0.9, -1.5]]
    np.testing.assert_array_equal(token_confidences(content), token_confidences(floats))
    assert token_confidences(content)[0] == pytest.approx(5.6 / 3)


def test_group_confidences_sliding_windows() -> None:
    assert group_confidences([1.0, 2.0, 3.0, 6.0], window=2).tolist() == [1.5, 2.5, 4.5]
    assert group_confidences([1.0, 2.0, 3.0, 6.0], window=3).tolist() == pytest.approx(
        [2.0, 11 / 3]
    )
    assert group_confidences([1.0, 2.0, 3.0, 6.0], window=1).tolist() == [1.0, 2.0, 3.0, 6.0]


@pytest.mark.parametrize("window", [4, 5, 2048])
def test_window_not_shorter_than_trace_is_one_group(window: int) -> None:
    assert group_confidences([1.0, 2.0, 3.0, 6.0], window=window).tolist() == [3.0]
    assert lowest_group_confidence([1.0, 2.0, 3.0, 6.0], window=window) == 3.0


def test_lowest_bottom_and_tail_hand_computed() -> None:
    conf = [4.0, 0.0, 2.0, 2.0, 6.0, 6.0]  # window 2 -> groups 2, 1, 2, 4, 6
    assert lowest_group_confidence(conf, window=2) == 1.0
    assert bottom_group_confidence(conf, window=2, fraction=0.1) == 1.0  # ceil(0.5) = 1 group
    assert bottom_group_confidence(conf, window=2, fraction=0.4) == 1.5  # 2 groups: 1, 2
    assert bottom_group_confidence(conf, window=2, fraction=1.0) == 3.0
    assert tail_confidence(conf, tail=2) == 6.0
    assert tail_confidence(conf, tail=3) == pytest.approx(14 / 3)
    assert tail_confidence(conf, tail=100) == pytest.approx(20 / 6)


def test_bottom_fraction_rounds_up_without_float_noise() -> None:
    conf = list(range(39))  # window 10 -> 30 groups 4.5, 5.5, ..., 33.5
    # 0.1 * 30 is 3.0000000000000004 in floats; three groups, not four
    assert bottom_group_confidence(conf, window=10) == pytest.approx(5.5)


def test_trace_confidence_hand_computed() -> None:
    rows = [[-0.1, -2.0], [-1.0, -1.0], [-0.5, -1.5], [-3.0, -3.0]]  # C = 1.05, 1, 1, 3
    t = trace_confidence(rows, window=2, tail=2, bottom_fraction=0.5)
    assert isinstance(t, TraceConfidence)
    assert t.tokens == 4
    assert t.mean == pytest.approx(6.05 / 4)
    assert t.lowest_group == pytest.approx(1.0)  # groups 1.025, 1.0, 2.0
    assert t.bottom_group == pytest.approx(1.0125)  # ceil(1.5) = 2 groups
    assert t.tail == pytest.approx(2.0)


def test_trace_confidence_of_one_token() -> None:
    t = trace_confidence([[-0.5, -1.5]])
    assert (t.tokens, t.mean, t.lowest_group, t.bottom_group, t.tail) == (1, 1.0, 1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([], "empty"),
        ([1.0, float("nan")], "finite"),
        ([1.0, float("inf")], "finite"),
        ([[1.0]], "1-D"),
        (["a"], "numbers"),
    ],
)
def test_confidence_aggregates_reject_bad_confidences(bad: Any, match: str) -> None:
    for fn in (group_confidences, lowest_group_confidence, bottom_group_confidence):
        with pytest.raises(InvalidInputError, match=match):
            fn(bad)
    with pytest.raises(InvalidInputError, match=match):
        tail_confidence(bad)


def test_confidence_aggregates_reject_bad_parameters() -> None:
    with pytest.raises(InvalidInputError, match="window must be a positive int"):
        group_confidences([1.0], window=0)
    with pytest.raises(InvalidInputError, match="window must be a positive int"):
        group_confidences([1.0], window=True)
    with pytest.raises(InvalidInputError, match="tail must be a positive int"):
        tail_confidence([1.0], tail=-1)
    with pytest.raises(InvalidInputError, match=r"fraction must be in \(0, 1\]"):
        bottom_group_confidence([1.0], fraction=0.0)
    with pytest.raises(InvalidInputError, match=r"fraction must be in \(0, 1\]"):
        trace_confidence([[-0.1]], bottom_fraction=1.5)


def _reference_groups(confs: list[float], group_size: int) -> list[float]:
    """DeepConf's reference ``compute_least_grouped``, without its rounding."""
    if len(confs) < group_size:
        return [sum(confs) / len(confs)]
    return [sum(confs[i : i + group_size]) / group_size for i in range(len(confs) - group_size + 1)]


@given(
    st.lists(st.floats(0.0, 20.0), min_size=1, max_size=60),
    st.integers(1, 80),
)
def test_group_confidences_match_deepconf_reference(confs: list[float], window: int) -> None:
    groups = group_confidences(confs, window=window)
    np.testing.assert_allclose(groups, _reference_groups(confs, window), atol=1e-9)
    assert min(confs) - 1e-9 <= groups.min() <= groups.max() <= max(confs) + 1e-9


# ----------------------------------------------------------------------------- self-certainty


def _self_certainty_reference(probs: list[list[float]]) -> float:
    """Kang et al. eq. 4 on full distributions: -(1/(nV)) sum_ij log(V p_ij)."""
    n, v = len(probs), len(probs[0])
    return -sum(math.log(v * p) for row in probs for p in row) / (n * v)


def test_self_certainty_hand_computed() -> None:
    assert self_certainty([[LN(0.5), LN(0.5)]]) == 0.0
    expected = -(LN(1.6) + LN(0.4)) / 2
    assert self_certainty([[LN(0.8), LN(0.2)]]) == pytest.approx(expected)
    probs = [[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]]
    logs = [[LN(p) for p in row] for row in probs]
    assert self_certainty(logs) == pytest.approx(_self_certainty_reference(probs))


def test_self_certainty_renormalises_the_top_k() -> None:
    # top-2 of a larger vocabulary: 0.4 and 0.1 renormalise to 0.8 and 0.2
    assert self_certainty([[LN(0.4), LN(0.1)]]) == pytest.approx(-(LN(1.6) + LN(0.4)) / 2)
    assert self_certainty([[LN(0.4), LN(0.1), LN(0.05)]], k=2) == pytest.approx(
        -(LN(1.6) + LN(0.4)) / 2
    )


def test_self_certainty_ragged_rows_and_single_entries() -> None:
    assert self_certainty([[-0.3]]) == 0.0
    rows = [[LN(0.5), LN(0.5)], [LN(0.8), LN(0.2)], [-2.0]]
    assert self_certainty(rows) == pytest.approx((0.0 - (LN(1.6) + LN(0.4)) / 2 + 0.0) / 3)


def test_self_certainty_is_stable_for_very_negative_logprobs() -> None:
    assert self_certainty([[-1000.0, -1000.0]]) == 0.0
    assert self_certainty([[-1000.0, -1001.0]]) == pytest.approx(
        self_certainty([[0.0, -1.0]]), rel=1e-9
    )


def test_self_certainty_rejects_bad_logprobs() -> None:
    with pytest.raises(InvalidInputError, match="NaN"):
        self_certainty([[float("nan")]])
    with pytest.raises(InvalidInputError, match="empty"):
        self_certainty([])


_logits = st.lists(st.floats(-5.0, 5.0), min_size=2, max_size=8)


@given(_logits, st.floats(0.05, 4.0), st.floats(0.0, 4.0))
def test_sharper_distribution_is_more_confident(
    logits: list[float], beta: float, extra: float
) -> None:
    """Lower temperature over the full vocabulary never lowers either confidence."""
    z = np.asarray(logits)

    def logprobs(b: float) -> list[list[float]]:
        scaled = b * z
        return [list(scaled - np.logaddexp.reduce(scaled))]

    soft, sharp = logprobs(beta), logprobs(beta + extra)
    assert token_confidences(sharp)[0] >= token_confidences(soft)[0] - 1e-9
    assert self_certainty(sharp) >= self_certainty(soft) - 1e-9


# ----------------------------------------------------------------------------- rewards


def test_reward_certainty_mean_and_max() -> None:
    assert reward_certainty([0.2, 0.6, 1.0]) == pytest.approx(0.6)
    assert reward_certainty([0.2, 0.6, 1.0], how="max") == 1.0
    assert reward_certainty([0.0]) == 0.0


def test_reward_certainty_rescales_and_clips() -> None:
    assert reward_certainty([-1.0, 1.0], value_range=(-1.0, 1.0)) == 0.5
    assert reward_certainty([-1.0, 0.0], value_range=(-1.0, 1.0), how="max") == 0.5
    assert reward_certainty([-5.0, 5.0], value_range=(0.0, 2.0)) == 0.5  # clipped to 0 and 1
    assert reward_certainty([20.0], value_range=(0.0, 10.0)) == 1.0


@pytest.mark.parametrize("value", [0.0, 0.37, 1.0])
def test_reward_certainty_all_equal(value: float) -> None:
    assert reward_certainty([value] * 5) == pytest.approx(value)
    assert reward_certainty([value] * 5, how="max") == value


@pytest.mark.parametrize(
    ("scores", "kwargs", "match"),
    [
        ([], {}, "scores is empty"),
        ([0.5, float("nan")], {}, r"scores\[1\] is nan"),
        ([float("inf")], {"value_range": (0.0, 1.0)}, "finite"),
        ([1.5], {}, r"scores\[0\] is 1.5, outside \[0, 1\]"),
        ([-0.1], {}, "outside"),
        ([0.5], {"value_range": (1.0, 1.0)}, "lo < hi"),
        ([0.5], {"value_range": (0.0, float("inf"))}, "lo < hi"),
        ([0.5], {"value_range": (0.0,)}, "pair"),
        ([0.5], {"how": "median"}, "how must be"),
        ("0.5", {}, "not a str"),
        ([[0.5]], {}, "1-D"),
    ],
)
def test_reward_certainty_rejects_bad_input(scores: Any, kwargs: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        reward_certainty(scores, **kwargs)


# ----------------------------------------------------------------------------- hedging


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18", False),
        ("Wait, that is wrong", True),
        ("WAIT", True),
        ("18} hmm", True),
        ("awaiting", False),
        ("butter", False),
        ("but", True),
        ("however,", True),
        ("Alternatively we", True),
        ("let me see", True),
        ("let\n  me", True),
        ("letme", False),
        ("double-check", True),
        ("double check", True),
        ("double-checked", False),
        ("I am not sure", True),
        ("notsure", False),
        ("maybe 18", True),
        ("", False),
    ],
)
def test_hedges_default_words(text: str, expected: bool) -> None:
    assert hedges(text) is expected


def test_hedges_custom_words() -> None:
    assert hedges("hold on", words=["hold on"])
    assert not hedges("wait", words=["hold on"])
    assert not hedges("wait", words=[])
    assert hedges("a.b", words=["a.b"]) and not hedges("axb", words=["a.b"])  # escaped
    assert "wait" in DEFAULT_HEDGE_WORDS


def test_hedges_rejects_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="text must be a str"):
        hedges(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="not a single str"):
        hedges("x", words="wait")
    with pytest.raises(InvalidInputError, match="non-blank"):
        hedges("x", words=["  "])


# ----------------------------------------------------------------------------- probes


def test_probe_agreement_agrees_on_normalised_answers() -> None:
    result = probe_agreement(["7", "18", "$18", "18.0"], window=3)
    assert result == ProbeAgreement(agreed=True, answer="18", reason="agreed")


@pytest.mark.parametrize(
    ("probes", "reason"),
    [
        ([], "too_few_probes"),
        (["18", "18"], "too_few_probes"),
        (["18", "18", None], "empty"),
        (["18", "", "18"], "empty"),
        (["18", "   ", "18"], "empty"),
        (["18", "18", "20"], "disagree"),
        (["18", "18", "18 wait"], "hedging"),  # "18 wait" normalises to "18", then hedges
        (["18", "18", "wait 18"], "disagree"),
        (["maybe", "maybe", "maybe"], "hedging"),
        (["20", "20", "18", "18"], "disagree"),
    ],
)
def test_probe_agreement_reasons(probes: list[str | None], reason: str) -> None:
    result = probe_agreement(probes, window=3)
    assert (result.agreed, result.answer, result.reason) == (False, None, reason)


def test_probe_agreement_checks_raw_texts_for_hedging() -> None:
    probes = ["18", "18", "18"]
    ok = ["18}\\]", "18}", "18} so"]
    assert probe_agreement(probes, texts=ok).agreed
    hedged = ["18}", "18} Hmm", "18}"]
    assert probe_agreement(probes, texts=hedged).reason == "hedging"
    # only the last `window` texts count
    assert probe_agreement(["9", *probes], texts=["wait", *ok]).agreed
    # custom hedge words
    assert probe_agreement(probes, texts=hedged, hedge_words=["nope"]).agreed
    assert probe_agreement(probes, texts=ok, hedge_words=["so"]).reason == "hedging"


def test_probe_agreement_window_and_key() -> None:
    assert probe_agreement(["18"], window=1).answer == "18"
    assert not probe_agreement(["A", "a"], window=2, key=str).agreed
    assert probe_agreement(["A", "a"], window=2, key=str.lower).answer == "a"
    assert probe_agreement(["x", "y"], window=2, key=lambda _: "").reason == "empty"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probes": "18"}, "not a single str"),
        ({"probes": ["18", 18]}, r"probes\[1\] must be str or None"),
        ({"probes": ["18"], "texts": ["a", "b"]}, "texts has 2 items but probes has 1"),
        ({"probes": ["18"], "window": 0}, "window must be a positive int"),
        ({"probes": ["18"], "window": 2.0}, "window must be a positive int"),
        ({"probes": ["18"], "hedge_words": "wait"}, "not a single str"),
    ],
)
def test_probe_agreement_rejects_bad_input(kwargs: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        probe_agreement(**kwargs)


# ----------------------------------------------------------------------------- weighted votes


def test_weighted_votes_hand_computed() -> None:
    v = weighted_votes(["18", "$18", "20", None, "  "], [1.0, 1.0, 3.0, 0.5, 0.5])
    assert v.counts == (("20", 3.0), ("18", 2.0))
    assert (v.abstained, v.abstained_weight, v.paths) == (2, 1.0, 5)
    assert (v.winner, v.winner_weight, v.total_weight) == ("20", 3.0, 6.0)
    assert v.share == pytest.approx(0.5)
    assert v.representatives == (("20", "20"), ("18", "18"))
    probs = np.array([3.0, 2.0, 0.5, 0.5]) / 6.0
    entropy = -float(np.sum(probs * np.log(probs)))
    assert v.certaindex == pytest.approx(1.0 - entropy / LN(5))


def test_weighted_votes_confidence_overturns_the_count() -> None:
    v = weighted_votes(["a", "b", "b"], [5.0, 1.0, 1.0])
    assert cluster_answers(["a", "b", "b"]).winner == "b"
    assert v.winner == "a"


def test_weighted_votes_extremes() -> None:
    assert weighted_votes(["1", "1.0", "1"], [0.2, 0.5, 0.9]).certaindex == 1.0
    assert weighted_votes(["1", "2", "3"], [2.0, 2.0, 2.0]).certaindex == pytest.approx(0.0)
    assert weighted_votes(["1"], [0.3]).certaindex == 0.0  # one path is no agreement
    # a zero-weight path counts as a path but casts no vote
    v = weighted_votes(["1", "2"], [1.0, 0.0])
    assert (v.counts, v.paths, v.winner, v.certaindex) == ((("1", 1.0),), 2, "1", 1.0)
    # all answers abstain
    v = weighted_votes([None, ""], [1.0, 1.0])
    assert (v.winner, v.winner_weight, v.share, v.abstained) == (None, 0.0, 0.0, 2)
    assert v.certaindex == 0.0
    # weight concentrated on one abstention is not certainty about an answer
    assert weighted_votes([None, None, "1"], [1.0, 0.0, 0.0]).certaindex == 0.0


def test_weighted_votes_ties_go_to_first_appearance() -> None:
    assert weighted_votes(["b", "a"], [1.0, 1.0]).winner == "b"


@pytest.mark.parametrize(
    ("answers", "weights", "match"),
    [
        ([], [], "at least one answer"),
        ("18", [1.0, 1.0], "not a single str"),
        (["18", 3], [1.0, 1.0], r"answers\[1\] must be str or None"),
        (["18"], [1.0, 2.0], "weights has 2 items but answers has 1"),
        (["18", "2"], [1.0, -0.5], r"weights\[1\] is -0.5; must be >= 0"),
        (["18", "2"], [1.0, float("nan")], r"weights\[1\] is nan"),
        (["18", "2"], [float("inf"), 1.0], "finite"),
        (["18", "2"], [0.0, 0.0], "all zero"),
    ],
)
def test_weighted_votes_rejects_bad_input(answers: Any, weights: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        weighted_votes(answers, weights)


_answers = st.lists(
    st.one_of(st.none(), st.sampled_from(["18", "$18", "18.0", "20", "x", "", "1/2", "0.5"])),
    min_size=1,
    max_size=25,
)


@given(_answers, st.floats(0.01, 100.0))
def test_equal_weights_equal_unweighted_votes(answers: list[str | None], weight: float) -> None:
    votes = cluster_answers(answers)
    weighted = weighted_votes(answers, [weight] * len(answers))
    assert [k for k, _ in weighted.counts] == [k for k, _ in votes.counts]
    for (_, w), (_, c) in zip(weighted.counts, votes.counts, strict=True):
        assert w == pytest.approx(c * weight)
    assert weighted.winner == votes.winner
    assert weighted.abstained == votes.abstained
    assert weighted.paths == votes.total
    assert weighted.representatives == votes.representatives
    assert weighted.share == pytest.approx(votes.share)
    assert weighted.certaindex == pytest.approx(certaindex(votes), abs=1e-12)


@given(
    _answers.flatmap(
        lambda a: st.tuples(
            st.just(a), st.lists(st.floats(0.0, 10.0), min_size=len(a), max_size=len(a))
        )
    )
)
def test_weighted_certaindex_stays_in_unit_interval(
    case: tuple[list[str | None], list[float]],
) -> None:
    answers, weights = case
    if sum(weights) <= 0:
        weights = [*weights[:-1], 1.0]
    v = weighted_votes(answers, weights)
    assert 0.0 <= v.certaindex <= 1.0
    assert v.total_weight == pytest.approx(sum(weights))


# ----------------------------------------------------------------------------- filtering


def test_filter_confident_hand_computed() -> None:
    items = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    confs = [0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.6, 0.2, 0.4, 0.0]
    assert filter_confident(items, confs) == ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
    assert filter_confident(items, confs, keep=0.1) == ["b"]
    assert filter_confident(items, confs, keep=0.3) == ["b", "d", "f"]
    assert filter_confident(items, confs, keep=0.25) == ["b", "d", "f"]  # ceil(2.5) = 3
    assert filter_confident(items, confs, keep=1.0) == items
    assert filter_confident(items, np.asarray(confs), keep=0.01) == ["b"]


def test_filter_confident_ties_and_single_item() -> None:
    assert filter_confident(["x"], [0.0], keep=0.1) == ["x"]
    assert filter_confident(["a", "b", "c"], [1.0, 2.0, 2.0], keep=0.3) == ["b"]
    assert filter_confident(["a", "b", "c"], [2.0, 1.0, 2.0], keep=0.5) == ["a", "c"]


@pytest.mark.parametrize(
    ("items", "confs", "keep", "match"),
    [
        ([], [], 0.9, "at least one item"),
        (["a"], [1.0, 2.0], 0.9, "confidences has 2 items but items has 1"),
        (["a", "b"], [1.0, float("nan")], 0.9, r"confidences\[1\] is nan"),
        (["a"], [float("-inf")], 0.9, "finite"),
        (["a"], [1.0], 0.0, r"keep must be in \(0, 1\]"),
        (["a"], [1.0], 1.5, r"keep must be in \(0, 1\]"),
        (["a"], [1.0], float("nan"), r"keep must be in \(0, 1\]"),
        (["a"], [1.0], True, r"keep must be in \(0, 1\]"),
    ],
)
def test_filter_confident_rejects_bad_input(
    items: list[str], confs: list[float], keep: float, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        filter_confident(items, confs, keep=keep)


@given(
    st.lists(st.floats(-10.0, 10.0), min_size=1, max_size=40),
    st.floats(0.001, 1.0),
)
def test_filter_keeps_the_most_confident_in_order(confs: list[float], keep: float) -> None:
    indices = list(range(len(confs)))
    kept = filter_confident(indices, confs, keep=keep)
    assert len(kept) >= 1
    assert len(kept) == max(1, math.ceil(keep * len(confs) - 1e-9))
    assert kept == sorted(kept)  # stable: input order
    dropped = set(indices) - set(kept)
    if dropped:
        assert min(confs[i] for i in kept) >= max(confs[i] for i in dropped)
