"""The real-stack fixture of the end-to-end tests, for `test_cli_e2e.py`."""

import pytest

from tests.e2e.conftest import stack  # noqa: F401


@pytest.fixture
def stack_env() -> dict[str, str]:
    # The webhook receiver listens on 127.0.0.1, which the default settings refuse as a target.
    return {"GANFT_WEBHOOK_ALLOW_PRIVATE": "1"}
