"""The MiniLM WordPiece tokenizer (committed asset), shared by the chunker and the local embedder."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

TOKENIZER_PATH = Path(__file__).parent / "assets" / "minilm-tokenizer.json"


@lru_cache(maxsize=1)
def minilm_tokenizer() -> Tokenizer:
    """The tokenizer of all-MiniLM-L6-v2, loaded once per process (no padding, no truncation)."""
    tok = Tokenizer.from_file(str(TOKENIZER_PATH))
    tok.no_padding()
    tok.no_truncation()
    return tok


def count_tokens(text: str) -> int:
    """MiniLM tokens in ``text``, without the [CLS]/[SEP] markers."""
    return len(minilm_tokenizer().encode(text, add_special_tokens=False).ids)
