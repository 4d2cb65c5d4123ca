"""Normalisation of short answers, so that equal answers written differently vote together.

The rules extend the SQuAD answer normalisation (lower case, no punctuation, no articles, single
spaces) with three steps that matter for model outputs:

1. **Framing is removed**: a leading "The answer is" / "Final answer:" (optionally after "so",
   "thus", "therefore", "hence"), and the content of a LaTeX ``\\boxed{...}`` when present.
2. **Numbers are canonical**: "1,000", "1000.0" and "+1000" are all "1000"; "0.50" is "0.5";
   "-0" is "0". Thousands separators must be well formed ("1,000", not "1,00"), so a list such
   as "1,2,3" stays three numbers. Decimal points inside numbers survive punctuation removal.
3. **Yes/no**: an answer that is exactly yes/true/correct becomes "yes"; exactly
   no/false/incorrect becomes "no". Only whole answers are mapped ("true love" stays as it is).

Everything else is tokenised into runs of letters and digits (any script), so punctuation,
quotes, markdown emphasis, brackets and a trailing period disappear; units and symbols ("$",
"%", "km") are not interpreted. Apostrophes inside words are removed ("don't" -> "dont").
Articles are English only (a, an, the) and kept when they are the whole answer, so a
multiple-choice "A" or "The answer is (A)." stays "a".
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from decimal import Decimal, InvalidOperation

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_FRAMING = re.compile(
    r"^\s*(?:(?:so|thus|therefore|hence)\b[\s,]*)?(?:the\s+)?(?:final\s+)?answer\s*(?:is\b|:|=)\s*:?\s*"
)
_INNER_APOSTROPHE = re.compile(r"(?<=\w)['\u2019](?=\w)")
_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_TOKEN = re.compile(rf"(?P<num>(?<![\w.]){_NUMBER}(?!\w|\.\d))|(?P<word>[^\W_]+)")
_ARTICLES = frozenset({"a", "an", "the"})
_YES = frozenset({"yes", "true", "correct"})
_NO = frozenset({"no", "false", "incorrect"})


def canonical_number(literal: str) -> str:
    """Canonical text of a number literal: no separators, no trailing zeros, no sign on zero."""
    try:
        value = Decimal(literal.replace(",", "")).normalize()
    except InvalidOperation:  # pragma: no cover - the token regex only yields valid literals
        return literal
    if value.is_zero():
        return "0"
    return format(value, "f")


def answer_tokens(text: str | None) -> list[str]:
    """The normalised tokens of an answer (see the module docstring for the rules)."""
    if not text:
        return []
    s = unicodedata.normalize("NFKC", text).casefold()
    boxed = _BOXED.findall(s)
    if boxed:
        s = boxed[-1]
    s = _FRAMING.sub("", s, count=1)
    s = _INNER_APOSTROPHE.sub("", s)
    tokens: list[str] = []
    for match in _TOKEN.finditer(s):
        number = match.group("num")
        if number is not None:
            tokens.append(canonical_number(number))
        else:
            tokens.append(match.group("word"))
    # An article is a whole answer in multiple choice ("A"); only drop articles next to content.
    content = [t for t in tokens if t not in _ARTICLES]
    tokens = content or tokens
    if len(tokens) == 1 and tokens[0] in _YES:
        return ["yes"]
    if len(tokens) == 1 and tokens[0] in _NO:
        return ["no"]
    return tokens


def normalize_answer(text: str | None) -> str:
    """Normalise a short answer for voting: ``"The answer is 1,000.0."`` -> ``"1000"``.

    Returns ``""`` for an empty or punctuation-only answer (such an answer cannot vote).
    """
    return " ".join(answer_tokens(text))


def token_f1(a: str | None, b: str | None) -> float:
    """SQuAD-style token F1 between two texts after normalisation (0 when either is empty)."""
    ta, tb = answer_tokens(a), answer_tokens(b)
    if not ta or not tb:
        return 0.0
    common = sum((Counter(ta) & Counter(tb)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(ta), common / len(tb)
    return 2 * precision * recall / (precision + recall)
