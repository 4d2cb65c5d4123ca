"""Evaluation library: metrics, LLM judges, RAGAS-style metrics, statistics and dataset parsing.

Pure library code (no database, no Temporal): activities call it with an injected ``LlmCall`` /
``Embed`` (see :mod:`evals.contracts`).
"""
