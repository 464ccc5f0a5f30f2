"""Reasoning strategies as LangChain Runnables, each a sans-IO core run by one driver."""

from dynasor_agents.strategies._base import Strategy, StrategyInput, chat_sampler
from dynasor_agents.strategies._best_of_n import JUDGE_PROMPT, BestOfN, BestOfNInput
from dynasor_agents.strategies._bon_core import (
    BestOfNResult,
    ScoredCandidate,
    ScoreRequest,
    best_of_n_core,
    logprob_reward,
    normalize_reward,
)
from dynasor_agents.strategies._completions import CompletionsModel, TextRequest, chatml
from dynasor_agents.strategies._cot_core import ProbedChainOfThoughtResult, probed_cot_core
from dynasor_agents.strategies._cot_probes import (
    DEFAULT_HEDGES,
    PROBE_SUFFIXES,
    Probe,
    probes_agree,
)
from dynasor_agents.strategies._drive import (
    Action,
    Await,
    Cancel,
    Completion,
    Core,
    Emit,
    Finish,
    Launch,
    SampleCall,
    Sampler,
    drive,
)
from dynasor_agents.strategies._probed_cot import EFFORT_PRESETS, ProbedChainOfThought
from dynasor_agents.strategies._sc_core import SelfConsistencyResult, self_consistency_core
from dynasor_agents.strategies._self_consistency import (
    DEFAULT_PROMPT,
    PROGRESS_EVENT,
    SelfConsistency,
    SelfConsistencyInput,
)
from dynasor_agents.strategies._tree_core import (
    Leaf,
    TreeSearchResult,
    TreeStopReason,
    tree_search_core,
)
from dynasor_agents.strategies._tree_policies import TreePolicy, beam, mcts, rebase
from dynasor_agents.strategies._tree_search import TreeSearch

__all__ = [
    "DEFAULT_HEDGES",
    "DEFAULT_PROMPT",
    "EFFORT_PRESETS",
    "JUDGE_PROMPT",
    "PROBE_SUFFIXES",
    "PROGRESS_EVENT",
    "Action",
    "Await",
    "BestOfN",
    "BestOfNInput",
    "BestOfNResult",
    "Cancel",
    "Completion",
    "CompletionsModel",
    "Core",
    "Emit",
    "Finish",
    "Launch",
    "Leaf",
    "Probe",
    "ProbedChainOfThought",
    "ProbedChainOfThoughtResult",
    "SampleCall",
    "Sampler",
    "ScoreRequest",
    "ScoredCandidate",
    "SelfConsistency",
    "SelfConsistencyInput",
    "SelfConsistencyResult",
    "Strategy",
    "StrategyInput",
    "TextRequest",
    "TreePolicy",
    "TreeSearch",
    "TreeSearchResult",
    "TreeStopReason",
    "beam",
    "best_of_n_core",
    "chat_sampler",
    "chatml",
    "drive",
    "logprob_reward",
    "mcts",
    "normalize_reward",
    "probed_cot_core",
    "probes_agree",
    "rebase",
    "self_consistency_core",
    "tree_search_core",
]
