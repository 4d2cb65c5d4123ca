"""Reference-based text metrics: exact, normalised match, BLEU, chrF, ROUGE.

Scales: every value is in 0..1. sacrebleu reports BLEU and chrF on 0..100; we divide by 100.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Literal

from rouge_score import rouge_scorer
from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.chrf import CHRF

from evals.contracts import EvalCase, MetricContext, TargetOutput
from evals.metrics.base import Params
from evals.outcome import Measured, MetricFailure


def reference(case: EvalCase) -> str:
    """The case's expected output, or a failure when it has none."""
    if case.expected is None:
        raise MetricFailure("case has no expected output")
    return case.expected


class ExactParams(Params):
    case_sensitive: bool = True


async def exact(params: ExactParams, case: EvalCase, output: TargetOutput, ctx: MetricContext) -> Measured:
    """1.0 when the output equals the expected output after stripping surrounding whitespace."""
    got, want = output.text.strip(), reference(case).strip()
    if not params.case_sensitive:
        got, want = got.casefold(), want.casefold()
    return Measured(1.0 if got == want else 0.0)


class NormalizedParams(Params):
    articles: list[str] = ["a", "an", "the"]


def normalize(text: str, articles: list[str]) -> str:
    """SQuAD-style normalisation, Unicode-aware: NFKC, casefold, drop punctuation, articles, extra spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(
        " " if unicodedata.category(ch).startswith("P") or ch in string.punctuation else ch for ch in text
    )
    if articles:
        pattern = r"\b(" + "|".join(re.escape(a.casefold()) for a in articles) + r")\b"
        text = re.sub(pattern, " ", text)
    return " ".join(text.split())


async def normalized_match(
    params: NormalizedParams, case: EvalCase, output: TargetOutput, ctx: MetricContext
) -> Measured:
    """1.0 when output and expected are equal after :func:`normalize`."""
    got, want = normalize(output.text, params.articles), normalize(reference(case), params.articles)
    return Measured(
        1.0 if got == want else 0.0, {"normalized_output": got[:500], "normalized_expected": want[:500]}
    )


class BleuParams(Params):
    lowercase: bool = False
    tokenize: Literal["13a", "intl", "char", "zh", "ja-mecab", "ko-mecab", "flores200", "none"] = "13a"
    smooth_method: Literal["exp", "floor", "add-k", "none"] = "exp"


async def bleu(params: BleuParams, case: EvalCase, output: TargetOutput, ctx: MetricContext) -> Measured:
    """Sentence-level BLEU (sacrebleu, default exp smoothing) on 0..1."""
    metric = BLEU(
        lowercase=params.lowercase,
        tokenize=params.tokenize,
        smooth_method=params.smooth_method,
        effective_order=True,
    )
    result = metric.sentence_score(output.text, [reference(case)])
    return Measured(
        result.score / 100.0,
        {
            "precisions": [p / 100.0 for p in result.precisions],
            "bp": result.bp,
            "signature": str(metric.get_signature()),
        },
    )


class ChrfParams(Params):
    word_order: int = 0  # 2 = chrF++
    char_order: int = 6
    beta: int = 2
    lowercase: bool = False


async def chrf(params: ChrfParams, case: EvalCase, output: TargetOutput, ctx: MetricContext) -> Measured:
    """Sentence-level chrF (or chrF++ with word_order=2), sacrebleu, on 0..1."""
    metric = CHRF(
        char_order=params.char_order,
        word_order=params.word_order,
        beta=params.beta,
        lowercase=params.lowercase,
    )
    result = metric.sentence_score(output.text, [reference(case)])
    return Measured(result.score / 100.0, {"signature": str(metric.get_signature())})


class RougeParams(Params):
    use_stemmer: bool = True


def _rouge(kind: str) -> Callable[[RougeParams, EvalCase, TargetOutput, MetricContext], Awaitable[Measured]]:
    async def rouge(
        params: RougeParams, case: EvalCase, output: TargetOutput, ctx: MetricContext
    ) -> Measured:
        scorer = rouge_scorer.RougeScorer([kind], use_stemmer=params.use_stemmer)
        result = scorer.score(reference(case), output.text)[kind]
        return Measured(result.fmeasure, {"precision": result.precision, "recall": result.recall})

    rouge.__doc__ = f"{kind} F1 (rouge-score, Porter stemming by default) on 0..1."
    return rouge


rouge1 = _rouge("rouge1")
rouge2 = _rouge("rouge2")
rouge_l = _rouge("rougeL")
