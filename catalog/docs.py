"""`/docs`: Swagger UI with its script and stylesheet served from an installed package, so the
docs work with no network. FastAPI's own /docs loads them from a CDN and is blank offline.

fastapi-offline ships Swagger UI 5 (which reads the OpenAPI 3.1 FastAPI writes); we use only
its files, not its app factory, since create_app builds the app itself.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/static/docs"


def mount_docs(app: FastAPI, url: str = "/docs") -> None:
    """Serve Swagger UI at URL from local assets; APP must be built with docs_url=None."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get(url, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} — docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            # The default validator badge is an image from validator.swagger.io: a network call.
            swagger_ui_parameters={"validatorUrl": None},
        )
