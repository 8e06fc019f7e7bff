"""Device ingest endpoints: the WebSocket stream and ``POST /v1/pings``."""

from __future__ import annotations

import logging

import orjson
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response

from api.auth import (
    RETRY_AFTER_S,
    STORAGE_ERRORS,
    bearer_token,
    close_unavailable,
    identify_device,
    runtime_of,
)

logger = logging.getLogger(__name__)
router = APIRouter()

CLOSE_UNAUTHORIZED = 4401
MAX_HTTP_BODY_BYTES = 1 << 20


@router.websocket("/v1/devices/stream")
async def device_stream(websocket: WebSocket) -> None:
    """Receive ping frames from one device and acknowledge each one."""
    runtime = runtime_of(websocket)
    token = bearer_token(websocket.headers, websocket.query_params.get("token"))
    try:
        identity = await identify_device(runtime, token)
    except STORAGE_ERRORS as error:
        await close_unavailable(websocket, error, "device")
        return
    await websocket.accept()
    if identity is None:
        logger.info("device connection rejected: unknown or missing token")
        await websocket.close(CLOSE_UNAUTHORIZED, "invalid device token")
        return

    org, device_id = identity.org, identity.contractor_id
    logger.info("device connected: org %s contractor %s", org, device_id)
    ingest = runtime.ingest
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                reply = {
                    "type": "error",
                    "error": "binary frames are not accepted; send JSON in text frames",
                }
            else:
                reply = await ingest.handle_frame(org, device_id, text)
            await websocket.send_text(orjson.dumps(reply).decode())
    except WebSocketDisconnect:
        pass
    finally:
        logger.info("device disconnected: org %s contractor %s", org, device_id)


@router.post("/v1/pings")
async def post_pings(request: Request) -> Response:
    """Take one frame over HTTP, for clients that can't hold a WebSocket."""
    runtime = runtime_of(request)
    try:
        identity = await identify_device(runtime, bearer_token(request.headers, None))
    except STORAGE_ERRORS as error:
        logger.warning("device token lookup failed: redis unavailable: %s", error)
        return _json(
            {"type": "error", "error": f"storage is unavailable ({error}); send the pings again", "retry": True},
            503,
        )
    if identity is None:
        error = "invalid or missing device token"
        if "token" in request.query_params and not request.headers.get("authorization"):
            # Query strings end up in proxy logs, so HTTP takes the header only.
            error = "device token must be sent in the Authorization: Bearer header, not in ?token="
            logger.info("device HTTP request rejected: token sent in the query string")
        return _json({"type": "error", "error": error}, 401)
    too_large = {"type": "error", "error": "body must be at most 1 MiB (1048576 bytes)"}
    declared = request.headers.get("content-length", "0")
    if declared.isdigit() and int(declared) > MAX_HTTP_BODY_BYTES:
        return _json(too_large, 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_HTTP_BODY_BYTES:
            return _json(too_large, 413)
        chunks.append(chunk)
    body = b"".join(chunks)
    reply = await runtime.ingest.handle_frame(identity.org, identity.contractor_id, body)
    if reply["type"] == "error":
        return _json(reply, 503 if reply.get("retry") else 400)
    return _json(reply, 200)


def _json(body: dict, status_code: int) -> Response:
    # A 503 means Redis is unreachable: the device should send again soon.
    headers = {"Retry-After": RETRY_AFTER_S} if status_code == 503 else None
    return Response(orjson.dumps(body), status_code, headers=headers, media_type="application/json")
