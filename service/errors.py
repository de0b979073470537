"""The HTTP edge of our exceptions: one dict from exception class to status code, one JSON error body.

Every error response is ``{"error": {"code": ..., "message": ...}}``. The most specific class in ``STATUS``
wins (the exception's MRO is walked in order), so a new subclass of ``InvalidScene`` is a 422 without
touching this file. The server's transient states (``Unavailable``: a full queue, Redis or the object store
unreachable) carry a ``Retry-After``; the Redis and storage client errors that mean them are translated into
those here, so they answer exactly as the admission check does (``service.admission``). Anything that is not
ours is a 500 with a generic message; the traceback goes to the log, never to the caller.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from spikescan import errors as e
from workers.objectstore import StorageUnavailable

log = logging.getLogger("spikescan.service")

STATUS: dict[type[e.SpikescanError], int] = {
    e.InvalidInput: 400,
    e.InvalidScene: 422,
    e.PayloadTooLarge: 413,
    e.UnknownModel: 404,
    e.NotFound: 404,
    e.Unauthorized: 401,
    e.Forbidden: 403,
    # A broken or tampered package in the server's catalogue: not the caller's mistake, and not a crash
    # either; the model is unavailable until an operator reinstalls it.
    # The server's transient state, never the caller's mistake: answered with Retry-After (``_ours``).
    # A full queue is 429 (back off: the load will drain), a dependency that is down 503.
    e.QueueFull: 429,
    e.Unavailable: 503,
    e.ModelPackageError: 503,
    e.BackendUnavailable: 503,
    e.DataUnavailable: 503,
    e.OutputError: 507,
    e.SpikescanError: 400,
}


def status_for(exc: e.SpikescanError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body(code, message), status_code=status, headers=headers)


async def _ours(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.SpikescanError)
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, e.Unavailable):
        headers = {"Retry-After": str(exc.retry_after_s)}
    return error_response(status, exc.code, exc.for_api(), headers)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(
        422, "invalid_request", f"{where}: {first.get('msg')}" if where else str(first["msg"])
    )


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))


async def _queue_down(request: Request, exc: Exception) -> JSONResponse:
    # Redis restarting or unreachable is the server's transient state, not the caller's fault: say when to
    # come back. Nothing was recorded, so repeating the request is safe.
    log.warning("Redis unavailable on %s %s: %s", request.method, request.url.path, exc)
    return await _ours(request, e.QueueUnavailable(
        "the job queue (Redis) is not reachable right now; nothing was recorded, retry shortly"
    ))


async def _queue_full(request: Request, exc: Exception) -> JSONResponse:
    # Redis at its maxmemory (noeviction) refused a write that slipped past the admission check (its look
    # is cached for a moment): the same answer as the check's. A refused MULTI applies nothing, and the
    # submission rolls back what it wrote before, so nothing was recorded.
    log.warning("Redis is out of memory on %s %s: %s", request.method, request.url.path, exc)
    return await _ours(request, e.QueueFull(
        "the server is at capacity: its job queue (Redis) is full; nothing was recorded, retry later"
    ))


async def _storage_down(request: Request, exc: Exception) -> JSONResponse:
    # The object store (SPIKESCAN_STORAGE_URL) down or throttling: the server's transient state, as Redis's.
    log.warning("storage unavailable on %s %s: %s", request.method, request.url.path, exc)
    return await _ours(request, e.StorageDown("the result storage is not reachable right now; retry shortly"))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal server error (see the server log)")


def install(app: FastAPI) -> None:
    app.add_exception_handler(e.SpikescanError, _ours)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(redis.ConnectionError, _queue_down)
    app.add_exception_handler(redis.TimeoutError, _queue_down)
    app.add_exception_handler(redis.BusyLoadingError, _queue_down)
    app.add_exception_handler(redis.OutOfMemoryError, _queue_full)
    app.add_exception_handler(StorageUnavailable, _storage_down)
    app.add_exception_handler(Exception, _unexpected)
