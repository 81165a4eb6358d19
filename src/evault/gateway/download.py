"""Sending a retrieved document: what the public API and the web pages share.

A retrieval yields verified segments (``evault.gateway.rebuild``).  :func:`first_chunk` pulls
the first one before any header goes out, so that a failure up to there still becomes a proper
error answer (JSON or page), and the nodes found faulty so far can go into the headers.
:func:`document_response` then sends the document: as one plain response when the first
segment was the whole document (its SHA-256 already checked against the receipt), or streamed
by :class:`DocumentResponse`, which releases the retrieval (its node connections) however the
response ends.  A failure after the headers went out raises :class:`StreamAborted` from the
body, and the server drops the connection: the client sees a truncated transfer, never bytes
the gateway could not vouch for.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from evault.errors import EvaultError

if TYPE_CHECKING:
    from evault.gateway.api import RetrievalPort

log = logging.getLogger("evault.gateway")

MEDIA_TYPE = "application/octet-stream"


class StreamAborted(Exception):
    """A download failed after its headers went out; the server drops the connection."""


class DocumentResponse(StreamingResponse):
    """A streaming response that releases the retrieval (its node connections) however it
    ends: finished, failed, or the client gone before the first byte was asked for."""

    def __init__(
        self,
        content: AsyncIterator[bytes | memoryview],
        *,
        on_close: Callable[[], Awaitable[None]],
        media_type: str,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


Chunks = AsyncIterator[bytes | memoryview]


async def close_retrieval(retrieval: RetrievalPort, chunks: Chunks) -> None:
    """Close the iterator and the retrieval (both are idempotent)."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()
    await retrieval.aclose()


async def first_chunk(retrieval: RetrievalPort) -> tuple[bytes | memoryview, Chunks]:
    """The first verified chunk (b"" for an empty document) and the iterator of the rest;
    the retrieval is closed if this fails."""
    chunks = aiter(retrieval)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""
    except BaseException:
        await close_retrieval(retrieval, chunks)
        raise
    return first, chunks


async def document_response(
    retrieval: RetrievalPort,
    first: bytes | memoryview,
    chunks: Chunks,
    *,
    owner: str,
    name: str,
    headers: Mapping[str, str],
) -> Response:
    """The response carrying the document whose first chunk is ``first``."""
    if len(first) == retrieval.size:
        # The whole document came in its first segment, whose SHA-256 the retrieval already
        # checked against the receipt (the last bytes are never released unchecked): one plain
        # response, without the task group a streaming response runs.
        await close_retrieval(retrieval, chunks)
        return Response(first, media_type=MEDIA_TYPE, headers=dict(headers))
    return DocumentResponse(
        rest_of_document(first, chunks, owner, name, retrieval.record.version),
        on_close=lambda: close_retrieval(retrieval, chunks),
        media_type=MEDIA_TYPE,
        headers=headers,
    )


async def rest_of_document(
    first: bytes | memoryview, chunks: Chunks, owner: str, name: str, version: int
) -> Chunks:
    """Yield the document; any failure propagates as :class:`StreamAborted`, and the server
    then aborts the connection instead of finishing the response."""
    try:
        if first:
            yield first
        async for chunk in chunks:
            if chunk:
                yield chunk
    except Exception as exc:
        log.error(
            "retrieval of %r version %d for %s failed after the headers were sent, "
            "aborting the connection: %s",
            name,
            version,
            owner,
            exc,
            exc_info=not isinstance(exc, EvaultError),
        )
        # Not an EvaultError: no handler may try to turn it into a response now.
        raise StreamAborted(f"retrieval of {name!r} version {version} aborted: {exc}") from exc
