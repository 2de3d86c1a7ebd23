"""classify: keyword and regex rules, and an LLM classifier served by a local OpenAI fake."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.config import ConfigError
from policies.classify import parse_label
from tests.fakes.openai_fake import Fail, Reply
from tests.routing_helpers import SIM, build, decision, run

RULES = """
  default:
    classify:
      rules:
        creative: [story, poem, write a haiku]
        analytical: {keywords: [compare], regex: ["pros? (and|&) cons", "^why\\\\b"]}
      branches: {creative: claude, analytical: {failover: [strong, cheap]}}
      otherwise: cheap
"""


@pytest.mark.parametrize(
    ("text", "label", "target"),
    [
        ("Tell me a STORY about a fox", "creative", "claude"),
        ("WRITE   a haiku about rain", "creative", "claude"),
        ("Compare Rust and Go", "analytical", "strong"),
        ("What are the pros & cons of YAML?", "analytical", "strong"),
        ("Why is the sky blue?", "analytical", "strong"),
        ("Compare a story and a poem", "creative", "claude"),  # labels in order
        ("Restore the storyboard", None, "cheap"),  # whole words only
        ("What is the capital of France?", None, "cheap"),
    ],
)
async def test_rules_first_match_case_insensitive(
    text: str, label: str | None, target: str
) -> None:
    call = await run(build(RULES), text)
    d = decision(call, "classify")
    assert d["outcome"] == (label or "otherwise")
    assert d["detail"]["by"] == "rules" and d["detail"]["label"] == label
    assert call.answer.target.name == target


async def test_rules_record_the_rule_and_the_words_that_matched() -> None:
    d = decision(await run(build(RULES), "a Poem, please"), "classify")
    assert (d["detail"]["rule"], d["detail"]["matched"]) == ("poem", "Poem")
    why = decision(await run(build(RULES), "why so?"), "classify")["detail"]
    assert (why["rule"], why["matched"]) == ("^why\\b", "why")


# ---- parsing a classifier's answer ---------------------------------------------------------

LABELS = ["creative", "analytical", "factual", "code_review"]
WRAPPERS = [
    "{}",
    "{}.",
    "  {}\n",
    "**{}**",
    "`{}`",
    '"{}"',
    "'{}'!",
    "Label: {}",
    "Category - {}",
    "I would classify this as {}.",
    "The answer is: {} (confidence high)",
    "<think>hmm, maybe something else</think>{}",
    "{}\n\nThis request asks for something of that kind.",
]


def _cased(text: str, flips: list[bool]) -> str:
    return "".join(
        c.upper() if flip else c for c, flip in zip(text, flips + [False] * 99, strict=False)
    )


@given(
    label=st.sampled_from(LABELS),
    wrapper=st.sampled_from(WRAPPERS),
    flips=st.lists(st.booleans(), max_size=12),
    spaced=st.booleans(),
)
def test_a_label_is_read_through_case_punctuation_and_sentences(
    label: str, wrapper: str, flips: list[bool], spaced: bool
) -> None:
    said = label.replace("_", " " if spaced else "_")
    answer = wrapper.format(_cased(said, flips))
    assert parse_label(answer, LABELS) == label


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_text_naming_no_label_is_unparseable(text: str) -> None:
    lowered = text.lower().replace("_", " ")
    if any(word in lowered for word in ("creative", "analytical", "factual", "code review")):
        return
    assert parse_label(text, LABELS) is None


@pytest.mark.parametrize(
    "answer",
    ["", "   ", "I cannot help with that.", "It is not creative; it is analytical", "creatively"],
)
def test_adversarial_answers_are_unparseable(answer: str) -> None:
    assert parse_label(answer, LABELS) is None


def test_a_label_inside_another_counts_as_the_longer() -> None:
    assert parse_label("Code review.", ["code", "code review"]) == "code review"
    assert parse_label("code", ["code", "code review"]) == "code"


# ---- the LLM classifier, against a fake OpenAI server --------------------------------------


def classifier_gateway(url: str, *, cache_size: int = 16, prompt: str | None = None):
    base = (
        SIM.replace(
            "providers:\n",
            f'providers:\n  judge: {{type: openai, base_url: "{url}/v1", api_key: k}}\n',
        )
        + "  small: {provider: judge, model: gpt-4o-mini}\n"
    )
    extra = f", prompt: {prompt!r}" if prompt else ""
    routes = f"""
  default:
    classify:
      classifier:
        {{model: small, labels: [creative, analytical, factual], cache_size: {cache_size}{extra}}}
      branches: {{creative: claude, analytical: strong, factual: cheap}}
      otherwise: cheap
"""
    return build(routes, base=base)


async def test_classifier_answer_picks_the_branch(openai_fake) -> None:
    fake, url = openai_fake
    fake.push(Reply(text="Analytical."))
    call = await run(classifier_gateway(url), "Compare two sorting algorithms")
    d = decision(call, "classify")
    assert d["outcome"] == "analytical" and call.answer.target.name == "strong"
    assert d["detail"]["raw"] == "Analytical." and d["detail"]["classifier"] == "small"
    assert d["detail"]["model_called"] is True
    sent = fake.bodies[0]
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0
    assert "creative, analytical, factual" in sent["messages"][0]["content"]
    assert sent["messages"][1] == {"role": "user", "content": "Compare two sorting algorithms"}


async def test_unparseable_or_failed_classifier_goes_otherwise(openai_fake) -> None:
    fake, url = openai_fake
    gateway = classifier_gateway(url)
    fake.push(Reply(text="I'd rather not say"), Fail(500, "boom"))
    garbled = await run(gateway, "one")
    assert decision(garbled, "classify")["outcome"] == "otherwise"
    assert decision(garbled, "classify")["detail"]["label"] is None
    failed = await run(gateway, "two")
    d = decision(failed, "classify")
    assert d["outcome"] == "otherwise" and d["detail"]["error"] == "server_error"
    assert failed.answer.target.name == "cheap"
    assert failed.attempts[0].target == "cheap"  # the classifier's attempt is not the answer's


async def test_classifications_are_cached_by_prompt_with_a_bound(openai_fake) -> None:
    fake, url = openai_fake
    fake.default = Reply(text="factual")
    gateway = classifier_gateway(url, cache_size=2)
    for text in ["a", "a", "b", "a", "c", "a", "b"]:
        await run(gateway, text)
    # a (miss) a (hit) b (miss) a (hit) c (miss, evicts b) a (hit) b (miss again)
    assert [b["messages"][1]["content"] for b in fake.bodies] == ["a", "b", "c", "b"]
    hit = decision(await run(gateway, "a"), "classify")["detail"]
    assert hit["cached"] is True and hit["model_called"] is False


async def test_the_prompt_can_be_overridden(openai_fake) -> None:
    fake, url = openai_fake
    fake.push(Reply(text="creative"))
    await run(classifier_gateway(url, prompt="Pick one of {labels}. One word."), "hi")
    assert (
        fake.bodies[0]["messages"][0]["content"]
        == "Pick one of creative, analytical, factual. One word."
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{branches: {a: cheap}, otherwise: cheap}", "give either rules or a classifier"),
        (
            "{rules: {a: [x]}, classifier: {model: cheap}, branches: {a: cheap}, otherwise: cheap}",
            "give either rules or a classifier",
        ),
        (
            "{rules: {a: [x], b: [y]}, branches: {a: cheap}, otherwise: cheap}",
            "the label 'b' has no branch",
        ),
        (
            "{rules: {a: {regex: ['(']}}, branches: {a: cheap}, otherwise: cheap}",
            "not a valid regular expression",
        ),
        (
            "{classifier: {model: cheep}, branches: {a: cheap}, otherwise: cheap}",
            "did you mean 'cheap'",
        ),
        (
            "{classifier: {model: cheap, labels: [a, b]}, branches: {a: cheap}, otherwise: cheap}",
            "the label 'b' has no branch",
        ),
        ("{rules: {a: [x]}, branches: {a: cheap}}", "otherwise"),
    ],
)
def test_config_mistakes(body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build(f"  default:\n    classify: {body}\n")
    assert expected in str(raised.value)
