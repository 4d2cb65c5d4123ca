"""Normalised (optionally reliability-weighted) majority vote over short answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.consensus.normalize import normalize_answer
from core.consensus.stats import smoothed_share, vote_weights
from core.consensus.types import CandidateAnswer, ConsensusOutcome

# Two scores closer than this are a tie (weights are floats: log-odds sums).
TIE_EPSILON = 1e-9
# Open answers make long labels; votes keep a readable prefix (the full texts live elsewhere).
MAX_LABEL_CHARS = 80


@dataclass(frozen=True)
class Ballot:
    """A candidate that can vote: its model, its original text and its normalised label."""

    index: int
    model: str
    text: str
    label: str


@dataclass(frozen=True)
class Tally:
    """Votes of one normalised answer."""

    label: str
    models: tuple[str, ...]
    weight: float


def split_candidates(cands: Sequence[CandidateAnswer]) -> tuple[list[Ballot], list[str]]:
    """Valid ballots (ok and non-empty after normalisation) and failed models, in input order."""
    ballots: list[Ballot] = []
    failed: list[str] = []
    for index, cand in enumerate(cands):
        label = normalize_answer(cand.text) if cand.ok else ""
        if label and cand.text is not None:
            ballots.append(Ballot(index, cand.model, cand.text.strip(), label))
        else:
            failed.append(cand.model)
    return ballots, failed


def tally(ballots: Sequence[Ballot], weights: Mapping[str, float] | None = None) -> list[Tally]:
    """Group ballots by label, ranked: higher weight, then more votes, then label (ascending)."""
    per_ballot = vote_weights([b.model for b in ballots], weights)
    groups: dict[str, list[int]] = {}
    for i, ballot in enumerate(ballots):
        groups.setdefault(ballot.label, []).append(i)
    tallies = [
        Tally(
            label=label,
            models=tuple(ballots[i].model for i in members),
            weight=sum(per_ballot[i] for i in members),
        )
        for label, members in groups.items()
    ]
    # Round the weight so float noise cannot reorder answers with equal support.
    tallies.sort(key=lambda t: (-round(t.weight, 9), -len(t.models), t.label))
    return tallies


def votes_of(tallies: Sequence[Tally], max_label_chars: int = MAX_LABEL_CHARS) -> dict[str, list[str]]:
    """The ``votes`` mapping: label -> models, long labels shortened (and kept distinct)."""
    votes: dict[str, list[str]] = {}
    for t in tallies:
        label = t.label if len(t.label) <= max_label_chars else t.label[: max_label_chars - 3] + "..."
        key, n = label, 1
        while key in votes:
            n += 1
            key = f"{label} #{n}"
        votes[key] = list(t.models)
    return votes


def tied_leaders(tallies: Sequence[Tally]) -> int:
    """How many answers share the top weight (1 when the leader is clear)."""
    if not tallies:
        return 0
    top = tallies[0].weight
    return sum(1 for t in tallies if abs(t.weight - top) <= TIE_EPSILON * max(1.0, abs(top)))


def display_answer(ballots: Sequence[Ballot], label: str) -> str:
    """The shortest original text among the ballots with ``label`` (earliest on equal length)."""
    texts = [b.text for b in ballots if b.label == label]
    return min(texts, key=len)


def empty_outcome(strategy: str, failed: list[str], error: str) -> ConsensusOutcome:
    """The outcome when no candidate can vote: no answer, confidence 0, the error said."""
    return ConsensusOutcome(
        strategy=strategy, answer="", confidence=0.0, failed=failed, needs_more=True, error=error
    )


def majority_vote(
    cands: Sequence[CandidateAnswer],
    weights: Mapping[str, float] | None = None,
    *,
    strategy: str | None = None,
) -> ConsensusOutcome:
    """Majority vote over normalised answers, optionally weighted by measured reliability.

    ``weights`` maps a model to its reliability in [0, 1] (see :func:`reliability_update`); each
    model then votes with the log-odds of its reliability (see :mod:`core.consensus.stats`).
    The confidence is the winner's weight share ``s`` among the ``n`` valid voters, smoothed to
    ``(n*s + 1) / (n + 2)``. Ties go to more votes, then to the lexicographically smallest
    normalised answer; a tie among ``k`` answers divides the confidence by ``k`` and sets
    ``needs_more``. ``strategy`` defaults to "weighted" when weights are given, else "majority".
    """
    name = strategy or ("weighted" if weights is not None else "majority")
    ballots, failed = split_candidates(cands)
    if not ballots:
        return empty_outcome(name, failed, "no valid candidate answers")
    tallies = tally(ballots, weights)
    winner = tallies[0]
    total = sum(t.weight for t in tallies)
    ties = tied_leaders(tallies)
    confidence = smoothed_share(winner.weight / total, len(ballots)) / ties
    return ConsensusOutcome(
        strategy=name,
        answer=display_answer(ballots, winner.label),
        confidence=confidence,
        winner_models=list(winner.models),
        votes=votes_of(tallies),
        dissent=[b.model for b in ballots if b.label != winner.label],
        failed=failed,
        reasons=f"tie among {ties} answers broken by vote count, then label" if ties > 1 else None,
        needs_more=ties > 1,
    )
