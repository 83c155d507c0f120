"""Evaluation: metrics (pure functions) and batched model runners."""

from .qa import answer_logprobs, answer_prob

__all__ = ["answer_logprobs", "answer_prob"]
