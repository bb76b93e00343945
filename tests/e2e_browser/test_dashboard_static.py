"""The dashboard's files as HTTP serves them (no browser needed): no auth, strict CSP, complete module graph."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from api.routes.dashboard import ASSETS_DIR

CSP = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; form-action 'none'; "
CSP += "frame-ancestors 'none'"
IMPORT = re.compile(r"""^import\s.*?from\s+"\./([a-z]+\.js)";$""", re.MULTILINE)


def test_page_needs_no_key_and_sends_security_headers(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert client.get("/v1/jobs").status_code == 401  # the API itself stays behind the key


def test_no_inline_code_and_no_remote_resources() -> None:
    """The CSP forbids inline scripts and styles; nothing may come from another origin."""
    html = (ASSETS_DIR / "index.html").read_text()
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, tag
    assert "<style" not in html and " style=" not in html and "onclick" not in html
    for path in ASSETS_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), f"{path.name} refers to another origin"
        assert not re.search(r"\.(innerHTML|outerHTML|insertAdjacentHTML)\b|\beval\(|new Function", text), path.name


def test_every_module_is_served(client: TestClient) -> None:
    """Starting from index.html, every stylesheet and (transitively imported) module answers 200 with its type."""
    html = (ASSETS_DIR / "index.html").read_text()
    pending = re.findall(r'(?:src|href)="dashboard/([a-z]+\.(?:js|css))"', html)
    assert set(pending) == {"app.js", "app.css"}
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        response = client.get(f"/dashboard/{name}")
        assert response.status_code == 200, name
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        assert response.headers["content-type"] == f"{kind}; charset=utf-8"
        assert response.headers["content-security-policy"] == CSP
        pending += IMPORT.findall(response.text)
    on_disk = {p.name for p in ASSETS_DIR.iterdir() if p.suffix in (".js", ".css")}
    assert seen == on_disk  # no file left unused


def test_only_dashboard_files_are_served(client: TestClient) -> None:
    for path in ("/dashboard/index.html", "/dashboard/nope.js", "/dashboard/..%2Fmain.py", "/dashboard/"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
