"""The FastAPI application: REST, WebSockets and pages of one server process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from api import devices
from api.auth import require_org, runtime_of
from api.runtime import Runtime
from tracker import orgs
from tracker.settings import Settings, load_settings

logger = logging.getLogger(__name__)

MAX_WS_FRAME_BYTES = 1 << 20


class ContractorIn(BaseModel):
    """Body of ``POST /v1/contractors``."""

    id: str = Field(min_length=1, max_length=64)
    name: str = Field(default="", max_length=200)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; settings come from ``ENROUTE_*`` variables when not given."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.create(settings)
        app.state.runtime = runtime
        for hook in app.state.startup_hooks:
            await hook(runtime)
        logger.info("enroute server process ready")
        try:
            yield
        finally:
            for hook in reversed(app.state.shutdown_hooks):
                await hook(runtime)
            await runtime.close()
            logger.info("enroute server process stopped")

    app = FastAPI(title="enroute", version="0.1.0", lifespan=lifespan)
    app.state.startup_hooks = []
    app.state.shutdown_hooks = []
    app.include_router(devices.router)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        messages = []
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"] if part != "body")
            messages.append(f"{field or 'body'}: {problem['msg']}")
        return JSONResponse({"detail": "; ".join(messages)}, status_code=422)

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, str]:
        await runtime_of(request).redis.ping()
        return {"status": "ok"}

    @app.post("/v1/contractors", status_code=201)
    async def create_contractor(
        body: ContractorIn, request: Request, org: str = Depends(require_org)
    ) -> Response:
        runtime = runtime_of(request)
        try:
            token = await orgs.create_contractor(runtime.redis, org, body.id, body.name)
        except orgs.OrgExistsError as error:
            raise HTTPException(409, str(error)) from None
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        payload = {"id": body.id, "name": body.name, "device_token": token}
        return Response(orjson.dumps(payload), 201, media_type="application/json")

    return app
