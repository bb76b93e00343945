"""The web dashboard: `GET /` and its static assets under `/dashboard/`, served by the API itself.

The assets are plain files in `api/dashboard/` (vanilla JS modules, no build step, nothing
fetched at run time). They hold no data and need no key: the page asks the user for an API
key and calls the v1 API with it. Every dashboard response carries a strict
Content-Security-Policy (scripts and styles from this origin only, no inline code; images may
also be `blob:` URLs, which is how artifact images fetched with the key are shown).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.problems import not_found

router = APIRouter(include_in_schema=False)

ASSETS_DIR = Path(__file__).resolve().parent.parent / "dashboard"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # module scripts need a JavaScript MIME type
    ".css": "text/css; charset=utf-8",
}
# The assets there at import: a name outside this map is a 404 (no path walking). An install
# without the folder (a wheel built without its package data) serves no dashboard but still starts.
ASSETS = {
    p.name: p
    for p in sorted(ASSETS_DIR.glob("*"))
    if p.is_file() and p.suffix in CONTENT_TYPES and p.name != "index.html"
}

CSP = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' blob: data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Revalidate every time (ETag/Last-Modified make that a 304): an upgraded server never
    # pairs a new index.html with stale modules.
    "Cache-Control": "no-cache",
}


def _file(path: Path) -> FileResponse:
    return FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers=SECURITY_HEADERS)


@router.get("/")
def dashboard() -> FileResponse:
    """The dashboard page (no data in it: the page itself asks for an API key)."""
    index = ASSETS_DIR / "index.html"
    if not index.is_file():
        raise not_found("dashboard", "index.html")
    return _file(index)


@router.get("/dashboard/{name}")
def dashboard_asset(name: str) -> FileResponse:
    """One of the dashboard's scripts or stylesheets."""
    path = ASSETS.get(name)
    if path is None:
        raise not_found("dashboard asset", name)
    return _file(path)
