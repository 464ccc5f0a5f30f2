r"""Certaindex for self-consistency: extract, cluster and measure sampled answers.

The pipeline for N sampled solutions to one question is::

    texts --extract_answer--> answers --cluster_answers--> Votes --certaindex--> [0, 1]

:func:`extract_answer` finds each solution's final answer, :func:`normalize_answer`
(the default clustering key) makes equal answers compare equal,
:func:`cluster_answers` counts them, and :func:`certaindex` measures how settled
the program is, as in the Dynasor paper: ``(log n - H) / log n`` where ``H`` is
the entropy of the answer distribution.

Example:
    >>> texts = [r"... so \boxed{18}", "#### 18", "The answer is $18.", "I think 20"]
    >>> votes = cluster_answers([extract_answer(t) for t in texts])
    >>> votes.winner, votes.winner_count, round(certaindex(votes), 3)
    ('18', 3, 0.594)
"""

from __future__ import annotations

from ._confidence import (
    DEFAULT_TAIL,
    DEFAULT_WINDOW,
    TraceConfidence,
    bottom_group_confidence,
    group_confidences,
    lowest_group_confidence,
    self_certainty,
    tail_confidence,
    trace_confidence,
)
from ._entropy import Votes, answer_entropy, certaindex, cluster_answers, majority_share
from ._extract import AnswerExtractor, extract_answer, normalize_answer
from ._logprobs import (
    FloatArray,
    LogprobsLike,
    logprob_matrix,
    mean_token_probability,
    token_confidences,
)
from ._probes import DEFAULT_HEDGE_WORDS, ProbeAgreement, ProbeReason, hedges, probe_agreement
from ._rewards import reward_certainty
from ._votes import WeightedVotes, filter_confident, weighted_votes

__all__ = [
    "AnswerExtractor",
    "DEFAULT_HEDGE_WORDS",
    "DEFAULT_TAIL",
    "DEFAULT_WINDOW",
    "FloatArray",
    "LogprobsLike",
    "ProbeAgreement",
    "ProbeReason",
    "TraceConfidence",
    "Votes",
    "WeightedVotes",
    "answer_entropy",
    "bottom_group_confidence",
    "certaindex",
    "cluster_answers",
    "extract_answer",
    "filter_confident",
    "group_confidences",
    "hedges",
    "logprob_matrix",
    "lowest_group_confidence",
    "mean_token_probability",
    "majority_share",
    "normalize_answer",
    "probe_agreement",
    "reward_certainty",
    "self_certainty",
    "tail_confidence",
    "token_confidences",
    "trace_confidence",
    "weighted_votes",
]
