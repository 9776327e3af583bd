"""HTTP plumbing shared by every router: strict JSON in, safe JSON out, one error shape.

* Requests: bodies are parsed as strict JSON (``NaN``, ``Infinity`` and duplicate-free plain
  JSON only); a body that is not JSON, or has bare non-finite numbers, is a 400.
* Responses: :class:`SafeJSONResponse` writes non-finite floats as the strings ``"NaN"``,
  ``"Infinity"`` and ``"-Infinity"`` (the proto3 JSON convention MLflow clients also read),
  so a stored NaN never turns a read into a 500.
* Errors: every failure is ``{"error": message, "hint": hint}`` with the status that
  :data:`assay.errors.HTTP_STATUS` gives its :class:`~assay.errors.AssayError` class (the one
  table); request-validation failures are 400s; MLflow routes add MLflow's ``error_code``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..errors import HTTP_STATUS, AssayError

__all__ = [
    "ERROR_RESPONSES",
    "InternalErrorsAsJSON",
    "SafeJSONResponse",
    "StrictJSONRoute",
    "TooLargeAsJSON",
    "install_error_handlers",
    "jsonable",
    "ok",
    "status_of",
]

log = logging.getLogger("assay.api")

_NONFINITE = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity"}

#: Documented on every route so OpenAPI (and schemathesis) know the error statuses.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "description": desc,
        "content": {"application/json": {"schema": {
            "type": "object",
            "properties": {"error": {"type": "string"}, "hint": {"type": "string"}},
            "required": ["error", "hint"],
        }}},
    }
    for code, desc in [
        (400, "Bad input (malformed JSON, wrong types, invalid names or values)"),
        (401, "Missing, unknown, revoked or expired token"),
        (403, "The token's role does not allow this"),
        (404, "Unknown id or route"),
        (409, "Conflicts with stored state"),
        (413, "Request body too large"),
        (503, "Temporarily unavailable; retry after the Retry-After seconds"),
    ]
}


def jsonable(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by ``"NaN"``/``"Infinity"``/``"-Infinity"``."""
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


class SafeJSONResponse(JSONResponse):
    """JSON that never fails on NaN or infinities (written as strings, see module doc)."""

    def render(self, content: Any) -> bytes:
        try:
            return json.dumps(content, ensure_ascii=False, allow_nan=False,
                              separators=(",", ":")).encode("utf-8")
        except ValueError:
            return json.dumps(jsonable(content), ensure_ascii=False, allow_nan=False,
                              separators=(",", ":"), default=str).encode("utf-8")


def ok(content: Any, status_code: int = 200) -> SafeJSONResponse:
    """A 200 that keeps NaN and infinities (FastAPI's own encoder would turn them into null)."""
    return SafeJSONResponse(content, status_code=status_code)


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON (send a number, null or a string)",
                               name, 0)


def _finite_float(text: str) -> float:
    """A JSON number as a float; one too large for a float (``1e400``) is refused rather
    than stored as infinity."""
    v = float(text)
    if math.isinf(v):
        raise json.JSONDecodeError(f"the number {text[:40]} is too large for a float "
                                   "(send at most about 1.8e308)", text, 0)
    return v


class _StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            # MLflow's routes parse as MLflow's own server does: 1e400 reads as infinity.
            finite = None if "/mlflow/" in self.url.path else _finite_float
            self._json = json.loads(body, parse_constant=_reject_constant, parse_float=finite)
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose request bodies are parsed as strict JSON (no bare NaN/Infinity)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict_handler


def status_of(exc: AssayError) -> int:
    """The HTTP status of an error, from the one table in :mod:`assay.errors`."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


_MLFLOW_CODES = {400: "INVALID_PARAMETER_VALUE", 401: "UNAUTHENTICATED",
                 403: "PERMISSION_DENIED", 404: "RESOURCE_DOES_NOT_EXIST",
                 405: "ENDPOINT_NOT_FOUND", 409: "RESOURCE_ALREADY_EXISTS",
                 413: "INVALID_PARAMETER_VALUE", 503: "TEMPORARILY_UNAVAILABLE"}


def error_response(request: Request, status: int, error: str, hint: str,
                   headers: dict[str, str] | None = None, **extra: Any) -> SafeJSONResponse:
    """The one error body: ``{"error", "hint"}`` (+ MLflow's fields on MLflow routes)."""
    body: dict[str, Any] = {"error": error, "hint": hint, **extra}
    if "/mlflow/" in request.url.path:
        body["error_code"] = _MLFLOW_CODES.get(status, "INTERNAL_ERROR")
        body["message"] = error
    return SafeJSONResponse(body, status_code=status, headers=headers)


_HTTP_HINTS = {
    401: "send 'Authorization: Bearer <token>'; an admin creates tokens with "
         "`assay token create --role viewer`",
    404: "see /docs for the routes and check the ids in the path",
    405: "see /docs for the methods each route accepts",
    413: "send smaller requests (split the batch)",
}


def _validation_message(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errs = exc.errors()
    parts = []
    details = []
    for e in errs[:10]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        msg = e.get("msg", "invalid")
        ctx = e.get("ctx") or {}
        if e.get("type") == "json_invalid":
            msg = f"malformed JSON: {ctx.get('error', msg)}"
            loc = f"body (at character {e.get('loc', ('', '?'))[-1]})"
        parts.append(f"{loc}: {msg}")
        details.append({"loc": [str(x) for x in e.get("loc", ())], "msg": str(msg),
                        "type": str(e.get("type", ""))})
    return "invalid request: " + "; ".join(parts), details


class TooLargeAsJSON:
    """ASGI middleware: Starlette's plain-text 413 (body limit) becomes ``{error, hint}``.

    Starlette's body limiter answers 413 itself, outside the app's exception handlers.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_json(message: Any) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 413:
                ctype = dict(message.get("headers", [])).get(b"content-type", b"")
                if ctype.startswith(b"text/plain"):
                    replaced = True
                    body = json.dumps({"error": "request body too large",
                                       "hint": _HTTP_HINTS[413]}).encode()
                    await send({"type": "http.response.start", "status": 413, "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
            if replaced:
                return
            await send(message)

        await self.app(scope, receive, send_json)


class InternalErrorsAsJSON:
    """ASGI middleware: an unexpected exception becomes the ``{error, hint}`` 500, and the
    connection stays usable.

    An app-level ``Exception`` handler runs in Starlette's outermost middleware, which
    re-raises after answering, so uvicorn then drops the keep-alive connection and the
    client's next request on it fails too. This answers and ends the exception here, logged
    with its traceback; one already answering (a stream) can only be cut off.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise
            request = Request(scope)
            log.error("unexpected error on %s %s", request.method, request.url.path,
                      exc_info=exc)
            response = error_response(request, 500, f"internal error: {type(exc).__name__}",
                                      "this is a bug in assay; the server log has the traceback")
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Map AssayError (by the one table), HTTP errors and validation errors to ``{error, hint}``."""

    @app.exception_handler(AssayError)
    async def _assay_error(request: Request, exc: AssayError) -> Response:
        status = status_of(exc)
        if status >= 500:
            log.error("internal error on %s %s: %s", request.method, request.url.path, exc,
                      exc_info=exc)
        headers = {"Retry-After": "1"} if status == 503 else None
        return error_response(request, status, exc.message, exc.hint, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error_response(request, exc.status_code, detail,
                              _HTTP_HINTS.get(exc.status_code, ""),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        msg, details = _validation_message(exc)
        return error_response(request, 400, msg,
                              "check the request against the OpenAPI schema at /openapi.json",
                              details=details)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(request, 500, f"internal error: {type(exc).__name__}",
                              "this is a bug in assay; the server log has the traceback")
