"""How complex a request is, as a score in [0, 1]: a heuristic, and the parser for a model's rating.

The heuristic reads four cues from the text, with no network and in microseconds: length, code,
multi-step structure (list items, "step by step", "then"), and reasoning words ("why", "prove",
"compare", "trade-off"). Each cue saturates, so no one cue alone can reach the top of the scale.
"""

from __future__ import annotations

import math
import re

# Regexes are compiled once; they are constants, not state.
_CODE = re.compile(
    r"```|^\s*(?:def|class|import|from|fn|func|public|private|#include)\b"
    r"|\bfunction\s*\w*\s*\(|=>|\bSELECT\b[^;]*\bFROM\b|[{};]\s*$",
    re.I | re.M,
)
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+\S", re.M)
_STEP_WORDS = re.compile(
    r"\b(?:step[- ]by[- ]step|steps?|first(?:ly)?|second(?:ly)?|then|next|finally|afterwards"
    r"|after that|multi-?step|plan)\b",
    re.I,
)
_REASONING = re.compile(
    r"\b(?:why|how come|explain|prove|proof|derive|analy[sz]e|analysis|compare|contrast"
    r"|evaluate|trade-?offs?|optimi[sz]e|design|architect(?:ure)?|reason(?:ing)?|justify|debug"
    r"|refactor|implement|algorithm|complexity|strategy|implications?|critique|diagnose)\b",
    re.I,
)
_SCAN_CHARS = 8000  # cues are read from the start of the text: bounded time on any prompt
_FULL_LENGTH = 2000  # characters at which length alone counts fully

WEIGHTS = {"length": 0.25, "code": 0.25, "steps": 0.2, "reasoning": 0.3}


def heuristic_score(text: str) -> float:
    """A complexity score in [0, 1] from the text alone."""
    head = text[:_SCAN_CHARS]
    length = min(1.0, len(text) / _FULL_LENGTH)
    code_hits = len(_CODE.findall(head))
    code = 1.0 if "```" in head or code_hits >= 3 else 0.6 if code_hits else 0.0
    steps = min(1.0, (len(_LIST_ITEM.findall(head)) + len(_STEP_WORDS.findall(head))) / 4)
    cues = {m.lower() for m in _REASONING.findall(head)}
    reasoning = min(1.0, len(cues) / 3)
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
