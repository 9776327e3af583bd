"""The fleet dashboard's pages: ``/`` and its static assets under ``/ui/``.

The dashboard is plain HTML, CSS and ES modules in ``api/static`` (uPlot vendored under
``static/vendor``): no build step, served by ``assay server`` itself. The page and its assets
hold no data, so they are public (:data:`PUBLIC_PATHS`); every byte of data comes from the
token-protected API, with the token the login form keeps in the browser's session (or local)
storage. They are plain Starlette routes, not API routes: the route audit
(``tests/api/test_api_auth.py``) accepts a non-API route only when its path is public.

Assets are served from an allow-list of suffixes, never outside the folder, from memory
(re-read when a file changes), with an ETag (revalidated on every load: a new version of a
module is picked up without a hard reload) and a Content-Security-Policy that allows scripts
only from this origin.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["PUBLIC_PATHS", "STATIC_DIR", "router"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The dashboard's routes: public because they serve code, never data.
PUBLIC_PATHS = frozenset({"/", "/ui/{path:path}"})

_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml", ".png": "image/png", ".html": "text/html; charset=utf-8",
          ".txt": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8",
          ".woff2": "font/woff2"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'")
_SECURITY = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
             "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


def _not_found(path: str) -> JSONResponse:
    return JSONResponse({"error": f"no dashboard asset {path!r}",
                         "hint": "open the dashboard at / (assets live under /ui/)"},
                        status_code=404)


#: path -> (mtime_ns, size, etag, bytes): assets are small (~400 KiB in all) and read on
#: every page load, so they are kept in memory and re-read only when the file changes.
_cache: dict[Path, tuple[int, int, str, bytes]] = {}


def _serve(request: Request, file: Path) -> Response:
    st = file.stat()
    hit = _cache.get(file)
    if hit is None or hit[:2] != (st.st_mtime_ns, st.st_size):
        data = file.read_bytes()
        etag = '"' + hashlib.sha1(data).hexdigest()[:20] + '"'
        hit = _cache[file] = (st.st_mtime_ns, st.st_size, etag, data)
    etag, data = hit[2], hit[3]
    headers = {**_SECURITY, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    media = _TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "text/plain"
    return Response(data, media_type=media, headers=headers)


async def index(request: Request) -> Response:
    """The single page (routing happens in the browser, after ``#``)."""
    return _serve(request, STATIC_DIR / "index.html")


async def asset(request: Request) -> Response:
    """One file under ``api/static`` (allow-listed suffixes; nothing outside the folder)."""
    rel = request.path_params["path"]
    file = (STATIC_DIR / rel).resolve()
    if (not file.is_relative_to(STATIC_DIR) or not file.is_file()
            or (file.suffix not in _TYPES and file.name != "LICENSE")):
        return _not_found(rel)
    return _serve(request, file)


router = APIRouter()
router.add_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
router.add_route("/ui/{path:path}", asset, methods=["GET", "HEAD"], include_in_schema=False)
