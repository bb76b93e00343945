"""Every hyperparameter of every method is documented in the README's "Hyperparameters" section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ganft_core.config import HYPERPARAMETERS, AugmentPolicy

README = Path(__file__).resolve().parents[1] / "README.md"


def section() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Hyperparameters\n(.*?)^## ", text, flags=re.S | re.M)
    assert match, "README.md has no '## Hyperparameters' section"
    return match.group(1)


@pytest.mark.parametrize("method", sorted(HYPERPARAMETERS))
def test_every_field_is_in_the_readme_table(method: str) -> None:
    text = section()
    table = text.split(f"**`{method}`**", 1)[1].split("\n\n**", 1)[0] if f"**`{method}`**" in text else ""
    assert table, f"no table for {method}"
    missing = [name for name in HYPERPARAMETERS[method].model_fields if f"`{name}`" not in table]
    assert not missing, f"{method} hyperparameters missing from README.md: {missing}"


def test_augment_policy_fields_and_defaults_are_documented() -> None:
    text = section()
    for name, field in AugmentPolicy.model_fields.items():
        default = str(field.default).lower()
        assert f'"{name}": {default}' in text, f"augment.{name} (default {default}) not in README.md"
