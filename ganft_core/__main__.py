"""`python -m ganft_core inspect|train ...`: see ganft_core/cli.py."""

from ganft_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
