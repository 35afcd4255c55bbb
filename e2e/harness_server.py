"""Serves the in-browser test harness (e2e/harness) next to the built page's static files.

    python e2e/harness_server.py [--port 8765] [--web-dir web/dist]

Routes: /static (web/dist/static, as the coordinator serves it), /harness (this repository's
e2e/harness: harness.html, page.js, harness.js), /harness/manifest.json (web/dist's build
manifest, which the coordinator does not serve) and / (a redirect to the harness page).
Every response carries the coordinator's CSP, so what runs here runs under the same rules as
the contribute page. ``create_app`` is the factory tests use with uvicorn or a TestClient.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "server") not in sys.path:
    sys.path.insert(0, str(ROOT / "server"))

from tabgrid.api.static import CSP, ImmutableFiles, SecurityHeaders  # noqa: E402

HARNESS_DIR = ROOT / "e2e" / "harness"
HARNESS_PAGE = "/harness/harness.html"
__all__ = ["CSP", "HARNESS_PAGE", "create_app"]


class HarnessFiles(StaticFiles):
    """The harness changes as tests are written: revalidated on every load, never stale."""

    def file_response(self, full_path, stat_result, scope, status_code=200) -> Response:  # type: ignore[no-untyped-def]
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = "no-cache"
        if str(full_path).endswith(".js"):
            response.headers["content-type"] = "text/javascript"
        return response


def create_app(web_dir: Path | None = None, harness_dir: Path | None = None) -> Starlette:
    web_dir = web_dir or ROOT / "web" / "dist"
    harness_dir = harness_dir or HARNESS_DIR
    manifest = web_dir / "manifest.json"

    async def manifest_json(request: Request) -> Response:
        return FileResponse(
            manifest, media_type="application/json", headers={"cache-control": "no-cache"}
        )

    async def home(request: Request) -> Response:
        return RedirectResponse(HARNESS_PAGE)

    routes = [
        Route("/", home, methods=["GET"]),
        Route("/harness/manifest.json", manifest_json, methods=["GET"]),
        Mount("/harness", HarnessFiles(directory=harness_dir), name="harness"),
        Mount(
            "/static", ImmutableFiles(directory=web_dir / "static", check_dir=False), name="static"
        ),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description="Serve the in-browser test harness.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--web-dir", type=Path, default=None, help="the built page (web/dist)")
    args = ap.parse_args()
    app = create_app(args.web_dir)
    print(f"harness: http://{args.host}:{args.port}{HARNESS_PAGE}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
