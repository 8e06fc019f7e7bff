"""The FastAPI application: REST, WebSockets and pages of one server process."""

from __future__ import annotations

import gc
import importlib.resources
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api import devices, jobs, live
from api.auth import RETRY_AFTER_S, require_org, runtime_of
from api.runtime import Runtime
from tracker import orgs
from tracker.redis_server import die_with_parent
from tracker.settings import Settings, load_settings
from tracker.store import StoreUnavailableError

logger = logging.getLogger(__name__)

MAX_WS_FRAME_BYTES = 1 << 20
# Longer rejected inputs are cut short in 422 messages.
MAX_INPUT_CHARS = 200
# A server with a thousand connections keeps many long-lived objects, and
# every ping allocates a few more: with the default thresholds (700, 10,
# 10) the cyclic garbage collector took about a quarter of the CPU time
# of the ingest path (python -m benchmarks.ingest, single-ping frames).
GC_THRESHOLDS = (50_000, 20, 100)


class ContractorIn(BaseModel):
    """Body of ``POST /v1/contractors``."""

    id: str = Field(min_length=1, max_length=64)
    name: str = Field(default="", max_length=200)


def _describe_input(value: object) -> str:
    """Write a rejected input as JSON, shortened to ``MAX_INPUT_CHARS``.

    ``json.dumps`` spells non-finite floats as ``Infinity`` and ``NaN``, as
    a client sends them, where orjson would write null.
    """
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > MAX_INPUT_CHARS:
        text = text[: MAX_INPUT_CHARS - 3] + "..."
    return text


async def start_services(runtime: Runtime) -> None:
    """Load the road graph and start the lifecycle, live hub and background tasks."""
    from tracker.etas import EtaService
    from tracker.lifecycle import Lifecycle
    from tracker.live import LiveHub
    from tracker.scheduler import FlagScheduler
    from tracker.webhooks import Webhooks

    settings = runtime.settings
    etas = await EtaService.create(runtime.redis, settings.graph, settings.graph_cache_dir)
    # The lifecycle writes on the ping writer's connection, so Redis runs a
    # batch's writes before the ingest of any frame received after it.
    lifecycle = Lifecycle(runtime.redis, settings, etas, commands=runtime.writer.command_pipe())
    runtime.ingest.observers.append(lifecycle.on_pings)
    runtime.writer.on_stored = lifecycle.prepare_batch
    hub = LiveHub(runtime.redis)
    webhooks = Webhooks(runtime.redis)
    scheduler = FlagScheduler(runtime.redis, lifecycle.jobs, settings)
    runtime.services.update(
        etas=etas, lifecycle=lifecycle, hub=hub, webhooks=webhooks, scheduler=scheduler
    )
    hub.start()
    webhooks.start()
    scheduler.start()


async def stop_services(runtime: Runtime) -> None:
    """Stop the background tasks started by :func:`start_services`."""
    for name in ("scheduler", "webhooks", "hub", "lifecycle"):
        service = runtime.services.get(name)
        if service is not None:
            await service.stop()


def _follow_parent() -> None:
    # uvicorn's worker processes outlive a SIGKILLed supervisor and keep the
    # port, so each worker requests a parent-death signal.
    parent = os.environ.get("ENROUTE_SUPERVISOR_PID")
    if not parent or int(parent) == os.getpid():
        return
    die_with_parent()
    if os.getppid() != int(parent):
        logger.error("supervisor pid %s is gone; stopping this worker", parent)
        os.kill(os.getpid(), signal.SIGTERM)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; settings come from ``ENROUTE_*`` variables when not given."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _follow_parent()
        gc.set_threshold(*GC_THRESHOLDS)
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
    app.include_router(jobs.router)
    app.include_router(live.router)
    web_dir = str(importlib.resources.files("web"))
    app.mount("/static", StaticFiles(directory=web_dir), name="static")
    app.state.startup_hooks.append(start_services)
    app.state.shutdown_hooks.append(stop_services)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        messages = []
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"] if part != "body")
            message = f"{field or 'body'}: {problem['msg']}"
            if problem["type"] != "missing":
                message += f", got {_describe_input(problem['input'])}"
            messages.append(message)
        return JSONResponse({"detail": "; ".join(messages)}, status_code=422)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    @app.exception_handler(StoreUnavailableError)
    async def storage_unavailable(request: Request, error: Exception) -> Response:
        logger.warning("%s %s failed: redis unavailable: %s", request.method, request.url.path, error)
        return JSONResponse(
            {"detail": f"storage is unavailable ({error}); retry later", "retry": True},
            status_code=503,
            headers={"Retry-After": RETRY_AFTER_S},
        )

    @app.get("/healthz")
    async def healthz(request: Request) -> Response:
        try:
            await runtime_of(request).redis.ping()
        except (RedisError, OSError) as error:
            logger.warning("health check failed: redis unreachable: %s", error)
            return JSONResponse(
                {"status": "unavailable", "redis": str(error), "retry": True},
                503,
                headers={"Retry-After": RETRY_AFTER_S},
            )
        return JSONResponse({"status": "ok"})

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
