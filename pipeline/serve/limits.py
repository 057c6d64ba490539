"""What `serve` takes from a request, and how it says no: one limit on the size of any request's body, on every
route (`BodyLimit`, an ASGI middleware on the whole app), under which Gradio's own limit on an uploaded file
(`MAX_FILE_MB`) applies; and a request Gradio itself refuses or fails is one line on the console
(`one_line_refusals`), as serve's own refusals are (`live.refuse`)."""
from __future__ import annotations

import os
import sys

MAX_FILE_MB = 25  # an uploaded photo (Gradio's own check on /gradio_api/upload, and gradio_client's before it sends)
MAX_BODY = 36 * 2**20  # any request's body: a 25 MB photo as a base64 data URL (4/3 of it) in JSON, with room


class BodyLimit:
    """ASGI middleware on the whole app: a request whose body is over `limit` bytes is answered 413 in one line on
    every route (Gradio capped only `/gradio_api/upload`; a 150 MB JSON call was read, queued and kept), before its
    body is read when it declares its length, else as soon as what arrived passes the limit (what was read is
    dropped with the request)."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return await self._refuse(send)
        seen, over, started = 0, False, False

        async def counted():
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                over = True
                raise _TooLarge
            return message

        async def sending(message):  # once over the limit, whatever the route answers (FastAPI: 400) becomes the 413
            nonlocal started
            if over:
                if not started:
                    started = True
                    await self._refuse(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send):
        body = (f"Request body over {self.limit:,} bytes: this server takes photos up to {MAX_FILE_MB} MB.\n").encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def body_limit():
    """`BodyLimit` as a Starlette middleware entry (`FastAPI(middleware=[...])`, which Gradio's `app_kwargs` reach)."""
    from starlette.middleware import Middleware

    return Middleware(BodyLimit)


class _TooLarge(Exception):
    """A body without a declared length went past `BodyLimit`'s limit while it was read."""


def unmap_large_blocks(threshold: int = 1 << 20) -> None:
    """Have glibc map each allocation of `threshold` bytes or more on its own, and unmap it when it is freed (its
    `M_MMAP_THRESHOLD`, fixed): a request body under the limit (up to 36 MB, read, decoded, written to a file) is then
    given back to the system once the request is done, not kept in the heap, where glibc's own threshold, which grows
    to 32 MB after the first such block, would keep it. No effect where the C library is not glibc."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, threshold)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


class _OneLineTracebacks:
    """Stands in for the `traceback` module in Gradio's queue and routes: its `print_exc()` of a request Gradio
    refused or failed (a file path it does not serve, a payload of another form, a stream frame it cannot decode:
    20-25 lines each) prints one line instead, `serve: refused a request: TYPE: message`; the whole traceback with
    PIPELINE_DEBUG=1. Everything else is the traceback module's."""

    def print_exc(self, *args, **kwargs):
        import traceback

        if os.environ.get("PIPELINE_DEBUG") == "1":
            return traceback.print_exc(*args, **kwargs)
        e = sys.exc_info()[1]
        print(f"serve: refused a request: {type(e).__name__}: {' '.join(str(e).split())[:300]}", file=sys.stderr,
              flush=True)

    def __getattr__(self, name):
        import traceback

        return getattr(traceback, name)


def one_line_refusals() -> None:
    """Make what Gradio prints of a refused or failed request one line (`_OneLineTracebacks`)."""
    from gradio import queueing, routes

    for module in (queueing, routes):
        module.traceback = _OneLineTracebacks()

