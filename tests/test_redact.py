"""The redactor masks a secret, or a long enough prefix or suffix of it, wherever quoted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.redact import MASK, MIN_FRAGMENT, Redactor


def reference(secrets: list[str], text: str) -> str:
    """The redactor as first written: every secret tried in full, then its fragments."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
        if secret[:MIN_FRAGMENT] in text or secret[-MIN_FRAGMENT:] in text:
            for size in range(len(secret) - 1, MIN_FRAGMENT - 1, -1):
                found = next((f for f in (secret[:size], secret[-size:]) if f in text), None)
                if found is not None:
                    text = text.replace(found, MASK)
                    break
    return text


alphabet = st.sampled_from("abcXYZ-_01 ")
secrets = st.lists(st.text(alphabet, min_size=4, max_size=20), min_size=1, max_size=3)


@st.composite
def quoting(draw) -> tuple[list[str], str]:
    """Secrets, and a text made of noise and whole or partial quotes of them."""
    keys = draw(secrets)
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(keys))
        cut = draw(st.integers(0, len(key)))
        parts.append(
            draw(st.sampled_from([key, key[:cut], key[cut:], draw(st.text(alphabet, max_size=8))]))
        )
    return keys, "".join(parts)


@settings(max_examples=400, deadline=None)
@given(quoting())
def test_same_text_as_the_reference(case: tuple[list[str], str]) -> None:
    keys, text = case
    assert Redactor(keys)(text) == reference(keys, text)


def test_whole_prefix_and_suffix_quotes_are_masked() -> None:
    secret = "sk-live-0123456789abcdef"
    redact = Redactor([secret])
    assert redact(f"key {secret}!") == f"key {MASK}!"
    assert redact(f"key {secret[:12]}…") == f"key {MASK}…"
    assert redact(f"…{secret[-10:]} rejected") == f"…{MASK} rejected"
    assert redact("nothing to see") == "nothing to see"
    assert redact(secret[: MIN_FRAGMENT - 1]) == secret[: MIN_FRAGMENT - 1]  # too short to matter
