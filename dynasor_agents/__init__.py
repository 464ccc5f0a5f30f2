"""dynasor-agents: Certaindex-guided reasoning programs for LangChain and vLLM.

Strategies such as :class:`SelfConsistency` are LangChain Runnables that measure
how settled their answer is (Certaindex) and stop as soon as a
:class:`CertaintyController` says so. Every request carries the program's id and
hints (:mod:`dynasor_agents.protocol`), which the server component
(:mod:`dynasor_agents.server`, loaded into vLLM) uses to attribute, schedule and
abort whole programs.

Example:
    >>> from langchain_core.language_models import FakeListChatModel
    >>> sc = SelfConsistency(
    ...     FakeListChatModel(responses=["\\\\boxed{18}", "It is $18.", "18 dollars"]),
    ...     controller=CertaintyController(threshold(0.9) | max_samples(6), first_round=3),
    ... )
    >>> sc.invoke("How much?").answer
    '18'
"""

from dynasor_agents._allocation import PoolMember, TokenPool, budget_curve, pool_share
from dynasor_agents._batch import BatchAllocator, BatchReport, QuestionReport
from dynasor_agents._calibration import load_calibration, load_controller, write_calibration
from dynasor_agents._controller_spec import ControllerSpec
from dynasor_agents._progress import Progress
from dynasor_agents._ranking import GainCurve, Ranking, by_gain, lowest_certainty
from dynasor_agents._stopping import (
    adaptive_consistency,
    beta_stop_probability,
    early_stopping,
    hopeless,
    weighted_consensus,
    weighted_vote,
)
from dynasor_agents.certainty import (
    AnswerExtractor,
    Votes,
    certaindex,
    cluster_answers,
    extract_answer,
    majority_share,
    normalize_answer,
)
from dynasor_agents.controller import (
    CertaintyController,
    Decision,
    Policy,
    ProgramState,
    StopReason,
    max_samples,
    max_tokens,
    threshold,
)
from dynasor_agents.errors import (
    BudgetExhaustedError,
    DeadlineExceededError,
    DynasorError,
    InvalidInputError,
    NoSamplesError,
    ProgramNotFoundError,
    ProgramStoppedError,
    ServerError,
    TooManyProgramsError,
)
from dynasor_agents.program import DynasorClient, Program
from dynasor_agents.protocol import Hints, ProgramInfo
from dynasor_agents.strategies import (
    PROGRESS_EVENT,
    BestOfN,
    BestOfNResult,
    CompletionsModel,
    ProbedChainOfThought,
    ProbedChainOfThoughtResult,
    SelfConsistency,
    SelfConsistencyResult,
    Strategy,
    TextRequest,
    TreeSearch,
    TreeSearchResult,
    beam,
    chatml,
    mcts,
    rebase,
)

__version__ = "0.1.0"

__all__ = [
    "PROGRESS_EVENT",
    "AnswerExtractor",
    "BatchAllocator",
    "BatchReport",
    "BestOfN",
    "BestOfNResult",
    "BudgetExhaustedError",
    "CertaintyController",
    "CompletionsModel",
    "ControllerSpec",
    "DeadlineExceededError",
    "Decision",
    "DynasorClient",
    "GainCurve",
    "DynasorError",
    "Hints",
    "InvalidInputError",
    "NoSamplesError",
    "Policy",
    "PoolMember",
    "ProbedChainOfThought",
    "ProbedChainOfThoughtResult",
    "Program",
    "ProgramInfo",
    "ProgramNotFoundError",
    "ProgramState",
    "ProgramStoppedError",
    "Progress",
    "QuestionReport",
    "Ranking",
    "SelfConsistency",
    "SelfConsistencyResult",
    "ServerError",
    "StopReason",
    "Strategy",
    "TextRequest",
    "TokenPool",
    "TreeSearch",
    "TreeSearchResult",
    "TooManyProgramsError",
    "Votes",
    "__version__",
    "adaptive_consistency",
    "beam",
    "beta_stop_probability",
    "budget_curve",
    "by_gain",
    "certaindex",
    "chatml",
    "cluster_answers",
    "early_stopping",
    "extract_answer",
    "hopeless",
    "load_calibration",
    "load_controller",
    "lowest_certainty",
    "majority_share",
    "max_samples",
    "mcts",
    "max_tokens",
    "normalize_answer",
    "pool_share",
    "rebase",
    "threshold",
    "weighted_consensus",
    "weighted_vote",
    "write_calibration",
]
