"""How complex a request is, as a score in [0, 1]: a heuristic, and the parser for a model's rating.

The heuristic reads four cues from the text, with no network and in microseconds: length, code,
multi-step structure (list items, "step by step", "then"), and reasoning words ("why", "prove",
"compare", "trade-off"). Each cue saturates, so no one cue alone can reach the top of the scale.
"""

from __future__ import annotations

import math
import re

# Patterns and word sets are built once; they are constants, not state. Cues are read from a
# single pass over the words (set lookups), so the cost grows with the text scanned, capped.
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_CODE_LINE = re.compile(
    r"^[ \t]*(?:def|class|import|from|fn|func|public|private|const|let|#include)\b"
    r"|[{};][ \t]*$",
    re.M,
)
_LIST_ITEM = re.compile(r"^[ \t]*(?:\d+[.)]|[-*\u2022])[ \t]+\S", re.M)
_STEP_WORDS = frozenset(
    [
        "step",
        "steps",
        "step-by-step",
        "first",
        "firstly",
        "second",
        "secondly",
        "then",
        "next",
        "finally",
        "afterwards",
        "multi-step",
        "multistep",
        "plan",
    ]
)
_REASONING_WORDS = frozenset(
    [
        "why",
        "explain",
        "prove",
        "proof",
        "derive",
        "analyze",
        "analyse",
        "analysis",
        "compare",
        "contrast",
        "evaluate",
        "trade-off",
        "trade-offs",
        "tradeoff",
        "tradeoffs",
        "optimize",
        "optimise",
        "design",
        "architect",
        "architecture",
        "reason",
        "reasoning",
        "justify",
        "debug",
        "refactor",
        "implement",
        "algorithm",
        "complexity",
        "strategy",
        "implication",
        "implications",
        "critique",
        "diagnose",
    ]
)
_SCAN_CHARS = 4000  # cues are read from the start of the text: bounded time on any prompt
_FULL_LENGTH = 2000  # characters at which length alone counts fully

WEIGHTS = {"length": 0.25, "code": 0.25, "steps": 0.2, "reasoning": 0.3}


def heuristic_score(text: str) -> float:
    """A complexity score in [0, 1] from the text alone."""
    head = text[:_SCAN_CHARS]
    words = _WORD.findall(head.lower())
    length = min(1.0, len(text) / _FULL_LENGTH)
    code_hits = len(_CODE_LINE.findall(head)) + head.count("=>")
    code = 1.0 if "```" in head or code_hits >= 3 else 0.6 if code_hits else 0.0
    step_hits = len(_LIST_ITEM.findall(head)) + sum(1 for w in words if w in _STEP_WORDS)
    steps = min(1.0, step_hits / 4)
    reasoning = min(1.0, len(_REASONING_WORDS.intersection(words)) / 3)
    parts = {"length": length, "code": code, "steps": steps, "reasoning": reasoning}
    return round(sum(WEIGHTS[name] * value for name, value in parts.items()), 3)


# ---- reading a model's rating ---------------------------------------------------------------

_THINKING = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.S | re.I)
# The scale echoed back ("on a scale from 0.0 to 1.0") is not the rating.
_SCALE = re.compile(
    r"(?:on\s+a\s+scale\s+)?(?:of|from|between)\s+0(?:\.0+)?\s*(?:to|and|-|\u2013)\s*"
    r"(?:1(?:\.0+)?|10|100)(?![\d.])",
    re.I,
)
_NUMBER = re.compile(
    r"(?<![\w.])(-?(?:\d+(?:[.,]\d+)?|[.,]\d+))(?!\w|[.,]\d)\s*"
    r"(%|/\s*(?:100|10|1(?:\.0+)?)(?![\d.])|out\s+of\s+(?:100|10|1)(?![\d.]))?",
    re.I,
)


def parse_score(answer: str) -> float | None:
    """The rating in a model's answer, in [0, 1], or None when there is none to read.

    '0.8', 'Complexity: 0.85.', '.8', '0,8', '8/10', '8 out of 10', '80%', and a bare 8 (out of
    ten) or 80 (out of a hundred) all read 0.8; negative, out of range or no number: None.
    """
    text = _SCALE.sub(" ", _THINKING.sub(" ", answer))
    match = _NUMBER.search(text)
    if match is None:
        return None
    value = float(match.group(1).replace(",", "."))
    scale = (match.group(2) or "").replace(" ", "").lower()
    if scale == "%" or scale.endswith("100"):
        value /= 100
    elif scale.endswith("10") or (not scale and 1 < value <= 10):
        value /= 10
    elif not scale and 10 < value <= 100:
        value /= 100
    if not math.isfinite(value) or not 0 <= value <= 1:
        return None
    return round(value, 4)
