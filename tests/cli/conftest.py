"""The real-stack fixture of the end-to-end tests, for `test_cli_e2e.py`."""

from tests.e2e.conftest import stack  # noqa: F401
