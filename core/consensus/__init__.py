"""Consensus strategies over candidate answers: pure functions, no I/O, deterministic.

Model calls (judge, aggregator, embeddings) happen in activities; these functions build their
prompts and interpret their outputs. See ``docs/consensus.md`` for the rules and the math.
"""

from core.consensus.adaptive import adaptive_step, run_adaptive_offline
from core.consensus.judge import judge_messages, parse_judge
from core.consensus.moa import moa_messages, moa_outcome
from core.consensus.normalize import normalize_answer, token_f1
from core.consensus.registry import STRATEGIES, StrategySpec, choose
from core.consensus.semantic import semantic_consensus
from core.consensus.sequential import (
    Voter,
    answer_posterior,
    choose_next,
    run_sequential_offline,
    sequential_step,
)
from core.consensus.stats import leader_probability, reliabilities, reliability_update, smoothed_share
from core.consensus.types import AdaptiveDecision, CandidateAnswer, ConsensusOutcome
from core.consensus.vote import majority_vote

__all__ = [
    "STRATEGIES",
    "AdaptiveDecision",
    "CandidateAnswer",
    "ConsensusOutcome",
    "StrategySpec",
    "Voter",
    "adaptive_step",
    "answer_posterior",
    "choose",
    "choose_next",
    "judge_messages",
    "leader_probability",
    "majority_vote",
    "moa_messages",
    "moa_outcome",
    "normalize_answer",
    "parse_judge",
    "reliabilities",
    "reliability_update",
    "run_adaptive_offline",
    "run_sequential_offline",
    "semantic_consensus",
    "sequential_step",
    "smoothed_share",
    "token_f1",
]
