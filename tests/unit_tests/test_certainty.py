"""Tests for dynasor_agents.certainty: extraction, normalisation, clustering, Certaindex."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynasor_agents.certainty import (
    Votes,
    answer_entropy,
    certaindex,
    cluster_answers,
    extract_answer,
    majority_share,
    normalize_answer,
)
from dynasor_agents.errors import InvalidInputError

# ----------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # \boxed / \fbox, nested braces, last one wins
        (r"so \boxed{18}", "18"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\sqrt{\frac{a}{b^{2}}}} done", r"\sqrt{\frac{a}{b^{2}}}"),
        (r"first \boxed{1}, then \boxed{2}, finally \boxed{3}.", "3"),
        (r"\fbox{7}", "7"),
        (r"\boxed {  42 }", "42"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{5} and a truncated \boxed{6", "5"),
        (r"\boxed{} then 9", "9"),
        (r"boxed beats phrase: the answer is 3, \boxed{4}", "4"),
        # GSM8K ####
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
        ("#### 1,000\n", "1,000"),
        ("#### 5\nmore text 9\n#### 6", "6"),
        ("#### Step 1\nwe get 5 things", "5"),  # a Markdown heading is not an answer
        # phrases
        ("The answer is 42.", "42"),
        ("Adding up, the answer is 42. Done.", "42"),
        ("The answer is 3.5 apples.", "3.5 apples"),
        ("Answer: $18.00", "$18.00"),
        ("answer: **42**", "42"),
        ("The final answer is: 7\nWait, no.", "7"),
        ("The answer is 1. Actually the answer is 2.", "2"),
        # last-number fallback
        ("We get 12 apples, then 1,500 more", "1,500"),
        ("It costs $18.", "$18"),
        ("so x = -7.", "-7"),
        ("roughly 3.25 units", "3.25"),
        ("5-3", "3"),
        # nothing
        ("no idea at all", None),
        ("", None),
        ("   \n\t ", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


# ----------------------------------------------------------------------------- normalisation

EIGHTEENS = [
    "18",
    "18.0",
    "$18",
    "18 dollars",
    r"\$18",
    "18.",
    "018",
    " 18 ",
    "$18$",
    r"\(18\)",
    r"\boxed{18}",
    r"18\text{ dollars}",
    "18 apples",
    "$18.00",
    "+18",
]


@pytest.mark.parametrize("answer", EIGHTEENS)
def test_normalize_equivalent_spellings_of_18(answer: str) -> None:
    assert normalize_answer(answer) == "18"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("0.50", "0.5"),
        (".5", "0.5"),
        ("-3.0", "-3"),
        ("-0", "0"),
        ("\u22127", "-7"),
        ("1,000", "1000"),
        ("1{,}000", "1000"),
        (r"1\,000", "1000"),
        (r"\$1,000.50", "1000.5"),
        ("30%", "30"),
        (r"30\%", "30"),
        (r"90^\circ", "90"),
        ("5 cm", "5"),
        ("5cm", "5"),
        ("x = 5", "5"),
        (r"\frac{1}{2}", "0.5"),
        (r"\dfrac{1}{2}", "0.5"),
        (r"\tfrac{3}{4}", "0.75"),
        (r"\frac12", "0.5"),
        ("1/2", "0.5"),
        ("-1/2", "-0.5"),
        (r"-\frac{1}{2}", "-0.5"),
        (r"\frac{-1}{3}", "-1/3"),
        ("2/3", "2/3"),
        ("4/2", "2"),
        ("1/1024", "0.0009765625"),
        ("1/0", "1/0"),  # not a number: kept as text
        # non-numeric
        (r"\text{Monday}", "monday"),
        ("New   York.", "new york"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"x\!+\!1", "x+1"),
        (r"\dfrac{\pi}{2}", r"\frac{\pi}{2}"),
        (r"2 \pi", r"2 \pi"),
        ("2x", "2x"),
        ("3 and 4", "3 and 4"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_normalize_answer(answer: str, expected: str) -> None:
    assert normalize_answer(answer) == expected


def test_fractions_and_decimals_share_a_key() -> None:
    keys = {normalize_answer(a) for a in [r"\frac{1}{2}", r"\dfrac{1}{2}", "1/2", "0.5", "0.50"]}
    assert keys == {"0.5"}
    assert normalize_answer(r"\frac{1}{3}") == normalize_answer("1/3") == "1/3"


# ----------------------------------------------------------------------------- clustering


def test_cluster_answers_counts_order_and_representatives() -> None:
    votes = cluster_answers(["20", "$18", None, "18 dollars", "  ", "20", "18", "7"])
    assert votes.counts == (("18", 3), ("20", 2), ("7", 1))  # ties: first appearance
    assert votes.abstained == 2
    assert votes.total == 8
    assert votes.winner == "18"
    assert votes.winner_count == 3
    assert votes.share == pytest.approx(3 / 8)
    assert votes.representative_of("18") == "$18"
    assert votes.representative_of("nope") is None
    assert votes.as_dict() == {
        "counts": {"18": 3, "20": 2, "7": 1},
        "abstained": 2,
        "total": 8,
        "winner": "18",
        "winner_count": 3,
        "share": 3 / 8,
        "representatives": {"18": "$18", "20": "20", "7": "7"},
    }


def test_cluster_answers_ties_keep_first_appearance() -> None:
    assert cluster_answers(["b", "a", "a", "b"]).winner == "b"


def test_cluster_answers_custom_key() -> None:
    votes = cluster_answers(["Yes", "YES", "no"], key=str.lower)
    assert votes.counts == (("yes", 2), ("no", 1))


def test_empty_key_counts_as_abstained() -> None:
    votes = cluster_answers(["$", "18"])
    assert votes.counts == (("18", 1),)
    assert votes.abstained == 1


def test_no_answers_at_all() -> None:
    votes = cluster_answers([None, None])
    assert votes.winner is None
    assert votes.winner_count == 0
    assert votes.share == 0.0
    assert certaindex(votes) == 0.0
    empty = cluster_answers([])
    assert empty.total == 0
    assert empty.share == 0.0


# ----------------------------------------------------------------------------- entropy


def _entropy_by_hand(sizes: list[int]) -> float:
    n = sum(sizes)
    return -sum((c / n) * math.log(c / n) for c in sizes)


def test_known_values_aaab() -> None:
    votes = cluster_answers(["a", "a", "a", "b"])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert answer_entropy(votes) == pytest.approx(h)
    assert certaindex(votes) == pytest.approx((math.log(4) - h) / math.log(4))
    assert certaindex(votes) == pytest.approx(0.594361, abs=1e-6)
    assert majority_share(votes) == 0.75


def test_known_values_with_abstentions() -> None:
    # clusters {a: 2, b: 1} plus two abstentions, each its own singleton
    votes = cluster_answers(["a", None, "b", "a", ""])
    h = _entropy_by_hand([2, 1, 1, 1])
    assert answer_entropy(votes) == pytest.approx(h)
    assert certaindex(votes) == pytest.approx((math.log(5) - h) / math.log(5))
    assert majority_share(votes) == pytest.approx(2 / 5)


def test_abstentions_lower_certainty() -> None:
    agreed = cluster_answers(["a", "a", "a"])
    with_abstention = cluster_answers(["a", "a", "a", None])
    assert certaindex(agreed) == 1.0
    assert certaindex(with_abstention) < certaindex(agreed)
    assert answer_entropy(cluster_answers([None, None, None])) == pytest.approx(math.log(3))
    assert certaindex(cluster_answers([None, None, None])) == 0.0


def test_extremes() -> None:
    assert certaindex(cluster_answers(["18", "$18", "18.0", "18 dollars"])) == 1.0
    assert certaindex(cluster_answers(["1", "2", "3", "4"])) == 0.0
    assert answer_entropy(cluster_answers(["x"])) == 0.0
    assert certaindex(cluster_answers(["x"])) == 0.0  # one sample is no evidence


def test_votes_built_directly() -> None:
    votes = Votes(counts=(("b", 1), ("a", 3)), abstained=0)
    assert votes.winner == "a"
    assert certaindex(votes) == pytest.approx(certaindex(cluster_answers(["a", "a", "a", "b"])))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [certaindex, majority_share, answer_entropy])
def test_no_samples_raises(fn: Callable[[Votes], float]) -> None:
    with pytest.raises(InvalidInputError, match="at least one sample"):
        fn(cluster_answers([]))
    with pytest.raises(ValueError, match="at least one sample"):  # InvalidInputError is one
        fn(Votes())


def test_cluster_answers_rejects_a_single_string() -> None:
    with pytest.raises(InvalidInputError, match="not a single str"):
        cluster_answers("18")


def test_cluster_answers_rejects_non_str_items() -> None:
    with pytest.raises(InvalidInputError, match=r"answers\[1\]"):
        cluster_answers(["18", 18])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("counts", "abstained", "match"),
    [
        ((("a", 1), ("a", 2)), 0, "duplicate"),
        ((("a", 0),), 0, "positive int"),
        ((("a", 1.5),), 0, "positive int"),
        ((("a", True),), 0, "positive int"),
        ((), -1, ">= 0"),
        ((), 1.0, "must be an int"),
    ],
)
def test_votes_validation(counts: object, abstained: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        Votes(counts=counts, abstained=abstained)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- properties

labels = st.sampled_from(["a", "b", "c", "d", "e", "f"])
answer_lists = st.lists(st.one_of(st.none(), labels), min_size=1, max_size=40)


@given(answer_lists)
def test_certaindex_in_unit_interval(answers: list[str | None]) -> None:
    votes = cluster_answers(answers)
    value = certaindex(votes)
    assert 0.0 <= value <= 1.0
    assert 0.0 <= answer_entropy(votes) <= math.log(votes.total) + 1e-12
    if votes.total > 1:
        expected = (math.log(votes.total) - answer_entropy(votes)) / math.log(votes.total)
        assert value == pytest.approx(expected, abs=1e-9)


@given(answer_lists, st.randoms(use_true_random=False))
def test_certaindex_permutation_invariant(answers: list[str | None], rnd: random.Random) -> None:
    shuffled = list(answers)
    rnd.shuffle(shuffled)
    a, b = cluster_answers(answers), cluster_answers(shuffled)
    assert certaindex(a) == pytest.approx(certaindex(b), abs=1e-12)
    assert answer_entropy(a) == pytest.approx(answer_entropy(b), abs=1e-12)
    assert dict(a.counts) == dict(b.counts)


@given(labels, st.integers(min_value=2, max_value=200))
def test_all_equal_is_one(label: str, n: int) -> None:
    assert certaindex(cluster_answers([label] * n)) == 1.0


@given(st.integers(min_value=1, max_value=200))
def test_all_distinct_is_zero(n: int) -> None:
    assert certaindex(cluster_answers([str(i) for i in range(n)])) == 0.0


@given(answer_lists)
def test_abstaining_never_increases_certaindex(answers: list[str | None]) -> None:
    before = certaindex(cluster_answers(answers))
    after = certaindex(cluster_answers([*answers, None]))
    assert after <= before


@given(st.text())
def test_extract_and_normalize_never_raise(text: str) -> None:
    found = extract_answer(text)
    assert found is None or (isinstance(found, str) and found.strip() == found and found)
    key = normalize_answer(text)
    assert isinstance(key, str)
    assert normalize_answer(key) == key


latex_ish = st.text(alphabet=list("0123456789.,-+$%\\{}()[]^/ abcdfrtxboxed"), max_size=40)


@given(latex_ish)
def test_extract_and_normalize_never_raise_on_latex_like_text(text: str) -> None:
    extract_answer(text)
    key = normalize_answer(text)
    assert normalize_answer(key) == key


@st.composite
def numeric_strings(draw: st.DrawFn) -> tuple[str, Fraction]:
    """A spelled-out number and its exact value."""
    whole = draw(st.integers(min_value=0, max_value=10**15))
    places = draw(st.integers(min_value=0, max_value=6))
    frac = draw(st.integers(min_value=0, max_value=10**places - 1)) if places else 0
    negative = draw(st.booleans())
    body = f"{whole:,}" if draw(st.booleans()) else str(whole)
    if places:
        body += "." + str(frac).zfill(places)
    prefix = draw(st.sampled_from(["", "$", "\\$"]))
    suffix = draw(st.sampled_from(["", " dollars", ".", " cm"]))
    text = ("-" if negative else "") + prefix + body + suffix
    value = Fraction(whole * 10**places + frac, 10**places)
    return text, -value if negative else value


@given(numeric_strings())
def test_normalize_numeric_is_idempotent_and_exact(case: tuple[str, Fraction]) -> None:
    text, value = case
    key = normalize_answer(text)
    assert normalize_answer(key) == key
    assert Fraction(key) == value


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_normalize_integers_render_plainly(n: int) -> None:
    assert normalize_answer(str(n)) == str(n)
    assert normalize_answer(f"{n:,}") == str(n)
    assert normalize_answer(f"{n}.000") == str(n)
