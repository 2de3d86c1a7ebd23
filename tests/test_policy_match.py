"""match: ordered rules on metadata, user, headers and ENVIRONMENT; first match wins."""

from __future__ import annotations

import pytest

from app.config import ConfigError
from app.errors import InvalidRequest
from tests.routing_helpers import build, decision, run

ROUTES = """
  default:
    match:
      - when: {metadata.tier: [premium, enterprise]}
        to: strong
      - when: {header.x-team: research, user: alice}
        to: claude
      - when: {env: production}
        to: {failover: [strong, cheap]}
      - when: {metadata.beta: true}
        to: claude
      - to: cheap
"""


@pytest.fixture
def gateway():
    return build(ROUTES)


async def test_metadata_any_of_values(gateway) -> None:
    call = await run(gateway, "hi", metadata={"tier": "enterprise"})
    assert call.answer.target.name == "strong"
    assert decision(call, "match")["detail"] == {
        "rule": 0,
        "when": {"metadata.tier": ["premium", "enterprise"]},
    }


async def test_every_condition_of_a_rule_must_hold(gateway) -> None:
    both = await run(gateway, "hi", user="alice", headers={"X-Team": "research"})
    assert both.answer.target.name == "claude"
    one = await run(gateway, "hi", user="bob", headers={"x-team": "research"})
    assert one.answer.target.name == "cheap"
    assert decision(one, "match")["detail"]["when"] == "default"


async def test_env_is_matched_case_insensitively_and_first_match_wins(gateway) -> None:
    call = await run(gateway, "hi", env="Production", metadata={"beta": True})
    assert call.answer.target.name == "strong"  # rule 2 comes before rule 3
    assert [d.policy for d in call.decisions] == ["match", "failover"]
    # A JSON true and YAML's true are the same value.
    assert (await run(gateway, "hi", metadata={"beta": True})).answer.target.name == "claude"
    assert (await run(gateway, "hi", metadata={"beta": "true"})).answer.target.name == "claude"
    assert (await run(gateway, "hi", metadata={"tier": "free"})).answer.target.name == "cheap"


async def test_no_rule_and_no_default_is_a_400() -> None:
    gateway = build("  default:\n    match:\n      - {when: {env: production}, to: strong}\n")
    with pytest.raises(InvalidRequest) as raised:
        await run(gateway, "hi", env="staging")
    assert raised.value.code == "no_match"


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        (
            "  default:\n    match:\n      - {to: cheap}\n      - {when: {user: a}, to: strong}\n",
            "only the last rule may leave out `when`",
        ),
        (
            "  default:\n    match:\n      - {when: {metdata.tier: x}, to: strong}\n",
            "unknown request key 'metdata.tier'",
        ),
        (
            "  default:\n    match:\n      - {when: {user: a}, to: strnog}\n",
            "did you mean 'strong'",
        ),
    ],
)
def test_config_mistakes_are_reported_with_their_path(routes: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build(routes)
    text = str(raised.value)
    assert expected in text and "routes.default.match" in text
