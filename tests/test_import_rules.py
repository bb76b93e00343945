"""The import rules of docs/CONTRACTS.md, checked statically (every import, lazy ones too) and at run time.

- ganft_core imports none of our other packages and no web/DB/queue library;
- api never imports torch or worker code, and from ganft_core only `config` and `errors`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICE_LIBRARIES = {
    "fastapi", "starlette", "uvicorn", "httpx", "requests", "sqlalchemy", "alembic", "psycopg", "psycopg2",
    "celery", "kombu", "redis", "prometheus_client", "python_multipart",
}  # fmt: skip
API_ALLOWED_CORE = {"ganft_core.config", "ganft_core.errors"}


def imports(package: str) -> Iterator[tuple[Path, int, str]]:
    """(file, line, dotted module) for every import statement under `package`, relative ones resolved."""
    for path in sorted((ROOT / package).rglob("*.py")):
        module_parts = path.relative_to(ROOT).with_suffix("").parts
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, node.lineno, alias.name
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    is_package = path.name == "__init__.py"
                    base = module_parts[: len(module_parts) - node.level + (1 if is_package else 0)]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                yield path, node.lineno, module
                for alias in node.names:  # `from ganft_core import config` imports ganft_core.config
                    yield path, node.lineno, f"{module}.{alias.name}"


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def test_core_imports_no_service_code() -> None:
    """ganft_core stays a plain library: no ganft/api/worker, no web, DB or queue packages."""
    forbidden = {"ganft", "api", "worker"} | SERVICE_LIBRARIES
    bad = [f"{p.relative_to(ROOT)}:{line} {m}" for p, line, m in imports("ganft_core") if _top(m) in forbidden]
    assert bad == []


def test_api_imports_no_torch_worker_or_trainer() -> None:
    """api imports neither torch nor worker, and from ganft_core only config and errors."""
    bad = []
    for path, line, module in imports("api"):
        top = _top(module)
        if top in {"torch", "worker", "torchvision"}:
            bad.append(f"{path.relative_to(ROOT)}:{line} {module}")
        if (
            top == "ganft_core"
            and module != "ganft_core"
            and not any(module == allowed or module.startswith(allowed + ".") for allowed in API_ALLOWED_CORE)
        ):
            bad.append(f"{path.relative_to(ROOT)}:{line} {module}")
    assert bad == []


def test_importing_the_api_loads_no_torch() -> None:
    """A fresh interpreter that imports api.main (building the app) has neither torch nor numpy loaded."""
    code = "import sys, api.main; print(sorted(m for m in ('torch', 'numpy', 'worker') if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
