"""The pages for people: the playground at `/`, Swagger UI at `/docs` and ReDoc at
`/redoc`, all served from files in installed packages, so that they work on a machine
with no internet access (FastAPI's own pages load their scripts from a CDN)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

PAGE_DIRECTORY = Path(__file__).resolve().parents[2] / "web"
# Swagger UI 5 and ReDoc as the fastapi-offline package ships them.
DOCS_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"

# The page loads nothing but its own files and talks only to this server: no inline
# script, no third-party origin, and it cannot be framed (the key lives in the page).
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# ReDoc's sidebar shows a "powered by" logo from its CDN: the page may load images
# from this server only, so the browser never asks for it (ReDoc draws with inline
# styles and runs its search in a worker made from a blob).
REDOC_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "content-security-policy": PAGE_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def install(app: FastAPI) -> None:
    """Serve `/` (its files under `/web`), `/docs` and `/redoc` (their files under
    `/docs-assets`). The app is created with `docs_url=None, redoc_url=None`."""
    app.mount("/web", StaticFiles(directory=PAGE_DIRECTORY), name="web")
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(PAGE_DIRECTORY / "index.html", headers=PAGE_HEADERS)

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
            # Keeps the key entered under "Authorize" across reloads of the page.
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API",
            redoc_js_url="/docs-assets/redoc.standalone.js",
            redoc_favicon_url="/docs-assets/favicon.png",
            with_google_fonts=False,
        )
        page.headers["content-security-policy"] = REDOC_POLICY
        return page

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        # Browsers ask for it on every page; a 404 there only fills logs.
        return FileResponse(DOCS_ASSETS / "favicon.png", media_type="image/png")
