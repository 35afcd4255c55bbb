"""The contribute page, the console page, their static files (web/dist), and security headers.

Files under /static have content-hashed or versioned names, so they are cached for a
year as immutable; only the page itself is revalidated on every visit. The
Content-Security-Policy allows nothing but this origin, plus the WebAssembly
compilation Pyodide needs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

IMMUTABLE = "public, max-age=31536000, immutable"
CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; "
    "worker-src 'self'; img-src 'self' data:; style-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
# Types Python's mimetypes may not know; a module worker and wasm streaming need exact ones.
CONTENT_TYPES = {".mjs": "text/javascript", ".wasm": "application/wasm", ".map": "application/json"}

_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tabgrid</title></head>
<body><h1>tabgrid</h1>
<p>This coordinator is running, but its contribute page is not built. Build it with
<code>./dev bundle</code> (or any <code>./dev</code> command) and reload.</p>
<p>Researchers: the HTTP API is described at <a href="/openapi.json">/openapi.json</a>;
the job list is at <a href="/status">/status</a>.</p></body></html>
"""


def default_web_dir() -> Path:
    """web/dist of the source tree this package runs from."""
    return Path(__file__).resolve().parents[3] / "web" / "dist"


class SecurityHeaders:
    """Adds the CSP and friends to every HTTP response (a pure ASGI wrapper: no body copies)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ImmutableFiles(StaticFiles):
    def file_response(self, full_path, stat_result, scope, status_code=200) -> Response:  # type: ignore[no-untyped-def]
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = IMMUTABLE
        content_type = CONTENT_TYPES.get(Path(full_path).suffix)
        if content_type:
            response.headers["content-type"] = content_type
        return response


def _page(path: Path) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        if not path.is_file():
            return HTMLResponse(_NOT_BUILT, status_code=503, headers={"cache-control": "no-store"})
        return HTMLResponse(path.read_bytes(), headers={"cache-control": "no-cache"})

    return serve


def routes(web_dir: Path) -> list[BaseRoute]:
    static = web_dir / "static"
    return [
        Route("/", _page(web_dir / "index.html"), methods=["GET"]),
        Route("/console", _page(web_dir / "console.html"), methods=["GET"]),
        Mount("/static", ImmutableFiles(directory=static, check_dir=False), name="static"),
    ]
