"""The pages for people: the playground at `/` and Swagger UI at `/docs`, both served
from files in the package, so that they work on a machine with no internet access."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

PAGE_DIRECTORY = Path(__file__).resolve().parents[2] / "web"

# The page loads nothing but its own files and talks only to this server: no inline
# script, no third-party origin, and it cannot be framed (the key lives in the page).
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "content-security-policy": PAGE_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def install(app: FastAPI) -> None:
    """Serve `/` (and its files under `/web`) and `/docs` (its assets under `/docs-assets`).
    The app is created with `docs_url=None`: FastAPI's own page loads from a CDN."""
    app.mount("/web", StaticFiles(directory=PAGE_DIRECTORY), name="web")
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(PAGE_DIRECTORY / "index.html", headers=PAGE_HEADERS)

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
            # Keeps the key entered under "Authorize" across reloads of the page.
            swagger_ui_parameters={"persistAuthorization": True},
        )
