"""The HTTP ingress: OpenAI-compatible video jobs, our live-stream extension, models and health.

Routes are thin: authenticate, read the body within its limit, validate (``RequestValidator``), then hand
over to the text-encoder and generator deployments (handles, typed ``messages``) and the job store. Every
error leaves as OpenAI's error envelope; anything unexpected becomes a generic 500 naming the request id
(``guard.RequestGuard``), with the details in the server log only.
"""


import asyncio
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .deployments import JobStoreClient
from .encoders import make_encoder
from .errors import APIError, echo, error_body, invalid, overloaded
from .guard import RequestGuard, request_id_of
from .httputil import MAX_BODY_BYTES, check_bearer, parse_body, read_body
from .live import LiveLimits, LiveSession
from .live_backend import ServeLiveBackend, WebSocketTransport
from .messages import Refused, StreamOpened, StreamRequest
from .schemas import (
    ErrorResponse,
    ModelCard,
    ModelList,
    VideoCreateRequest,
    VideoDeleted,
    VideoList,
    VideoObject,
    VideoStreamRequest,
)
from .sessions import cancel_quietly, run_video_job, stream_bytes
from .validation import GenerationSpec, Limits, RequestValidator

log = logging.getLogger("ray.serve")


@dataclass
class IngressSettings:
    """Limits and policies of the HTTP front door."""

    limits: Limits = field(default_factory=Limits)
    request_timeout_s: float = 300.0  # per request: streams and jobs stop past it
    retry_after_s: float = 2.0  # the Retry-After of 503 answers
    api_key: str | None = None  # bearer token required on /v1 when set ...
    api_key_env: str = "SELFFORCING_API_KEY"  # ... or when this variable is set in the replica
    session_idle_timeout_s: float = 60.0  # a live session with no client message this long is closed
    max_body_bytes: int = MAX_BODY_BYTES  # larger request bodies are refused (413) before parsing
    open_attempts: int = 2  # generator replicas tried before 503 (the router may pick a full one)


def _body_schema(model: type) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema}, "multipart/form-data": {"schema": schema}}}}


_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 503)}

app = FastAPI(
    title="Self Forcing video API",
    version="1",
    description="OpenAI-compatible video generation (POST /v1/videos ...) and live streaming "
    "(POST /v1/videos/stream) from an autoregressive video diffusion model.",
)
app.add_middleware(RequestGuard)


@app.exception_handler(APIError)
async def _api_error(request: Request, err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    first = err.errors()[0]
    param = ".".join(str(p) for p in first["loc"][1:]) or None
    return JSONResponse(error_body(f"Invalid value for {echo(param)}: {echo(first.get('input'))} "
                                   f"({first['msg']}).", "invalid_request_error", param, "invalid_value"),
                        status_code=400)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
    return JSONResponse(error_body(str(err.detail), "invalid_request_error", None, code),
                        status_code=err.status_code, headers=getattr(err, "headers", None))


def _is_overload(exc: BaseException) -> bool:
    """Serve's own queue limit (``BackPressureError``; sized never to bind first) or our own 503. A
    replica's admission refusing arrives as a ``Refused`` item, not as an exception."""
    if isinstance(exc, APIError):
        return exc.code == "overloaded"
    return isinstance(exc, BackPressureError)


def _page() -> str:
    return resources.files("selfforcing.serving").joinpath("static/index.html").read_text()


@serve.deployment(name="VideoAPI", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=100,
                  max_queued_requests=100)
@serve.ingress(app)
class VideoAPI:
    """Ingress replica: holds handles to the text encoder, the generators and the job store."""

    def __init__(self, text_encoder, generator, job_store, settings: IngressSettings) -> None:
        self.text_encoder = text_encoder
        self.generator = generator
        self.jobs = JobStoreClient(job_store)
        self.settings = settings
        self.api_key = settings.api_key or os.environ.get(settings.api_key_env) or None
        self._validator: RequestValidator | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- helpers ---------------------------------------------------------------------------------------
    async def _authorized_validator(self, request: Request) -> RequestValidator:
        check_bearer(request.headers.get("authorization"), self.api_key)
        return await self._get_validator()

    async def _get_validator(self) -> RequestValidator:
        if self._validator is None:
            info = await self.text_encoder.info.remote()
            self._validator = RequestValidator(info, self.settings.limits)
        return self._validator

    async def _spec(self, request: Request, stream: bool) -> GenerationSpec:
        validator = await self._authorized_validator(request)
        raw = await read_body(request, self.settings.max_body_bytes)
        body = parse_body(request.headers.get("content-type"), raw)
        return validator.validate(body, stream=stream)

    async def _open(self, spec: GenerationSpec):
        """Text embedding, then a streaming call to a generator replica, up to its ``StreamOpened``:
        (chunks, opened). A replica whose admission refuses is retried once on another pick of the
        router; then ``APIError`` 503. Chunks follow in ``chunks``."""
        text = await self.text_encoder.encode.remote(spec.prompt)
        request = StreamRequest(seed=spec.seed, num_frames=spec.num_frames)
        for _ in range(self.settings.open_attempts):
            chunks = self.generator.options(stream=True).stream.remote(request, text)
            try:
                opened = await asyncio.wait_for(anext(chunks), timeout=self.settings.request_timeout_s)
            except asyncio.TimeoutError:
                cancel_quietly(chunks)
                raise APIError(504, "no generator answered within the per-request time limit", "server_error",
                               code="timeout") from None
            except Exception as exc:
                cancel_quietly(chunks)
                if not _is_overload(exc):
                    raise
                continue
            if isinstance(opened, Refused):  # this replica's admission said no; the router may pick another
                log.info("generator refused a stream: %s", opened.reason)
                continue
            if not isinstance(opened, StreamOpened):
                raise TypeError(f"a generator stream began with {type(opened).__name__}")
            return chunks, opened
        raise overloaded("All generator replicas are full (every batch row and waiting slot is taken); "
                         "retry later.", self.settings.retry_after_s)

    async def _open_job_stream(self, spec: GenerationSpec):
        chunks, _ = await self._open(spec)
        return chunks

    # -- page ------------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        """The live player: prompt box, canvas, prompt switch, per-chunk latency (plain HTML + JS)."""
        return HTMLResponse(_page(), headers={"Cache-Control": "no-store"})

    # -- health and models -----------------------------------------------------------------------------
    @app.get("/healthz", summary="Liveness and the served model")
    async def healthz(self) -> dict[str, Any]:
        info = await self.text_encoder.info.remote()
        return {"status": "ok", "model": info.id, "jobs": await self.jobs.stats()}

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS, summary="The served model")
    async def list_models(self, request: Request) -> ModelList:
        return ModelList(data=[self._card(await self._authorized_validator(request))])

    @app.get("/v1/models/{model_id}", response_model=ModelCard, responses=_ERRORS)
    async def get_model(self, model_id: str, request: Request) -> ModelCard:
        card = self._card(await self._authorized_validator(request))
        if model_id != card.id:
            raise APIError(404, f"model {echo(model_id)} not found; served: {card.id!r}", param="model",
                           code="model_not_found")
        return card

    def _card(self, v: RequestValidator) -> ModelCard:
        i = v.info
        return ModelCard(
            id=i.id, created=i.created, source=i.source, registry=i.registry, preset=i.preset, size=i.size,
            fps=i.fps, frames_per_chunk=i.frames_per_chunk, pixel_frames_per_chunk=i.pixel_frames_per_chunk,
            default_num_frames=min(i.default_num_frames, v.max_num_frames), max_num_frames=v.max_num_frames,
            valid_num_frames=v.valid_frames,
        )

    # -- OpenAI video jobs -----------------------------------------------------------------------------
    @app.post("/v1/videos", response_model=VideoObject, responses=_ERRORS, summary="Create a video job",
              openapi_extra=_body_schema(VideoCreateRequest))
    async def create_video(self, request: Request) -> JSONResponse:
        spec = await self._spec(request, stream=False)
        video = await self.jobs.create(spec)
        deadline = time.perf_counter() + self.settings.request_timeout_s
        task = asyncio.create_task(run_video_job(
            video.id, spec.fps, lambda: self._open_job_stream(spec), self.jobs, deadline,
            self.settings.retry_after_s, _is_overload, request_id_of(request.scope),
        ))
        self._tasks.add(task)  # keep a reference: the loop holds tasks only weakly
        task.add_done_callback(self._tasks.discard)
        return JSONResponse(video.model_dump(), headers={"openai-poll-after-ms": "250"})

    @app.get("/v1/videos", response_model=VideoList, responses=_ERRORS, summary="List video jobs")
    async def list_videos(
        self, request: Request, after: str | None = Query(None, max_length=64, description="a video id"),
        limit: int = Query(20, ge=1, le=100), order: Literal["asc", "desc"] = "desc",
    ) -> dict[str, Any]:
        await self._authorized_validator(request)
        return (await self.jobs.list(after, limit, order)).model_dump()

    @app.api_route("/v1/videos/stream", methods=["GET", "DELETE", "PUT", "PATCH"], include_in_schema=False)
    async def stream_wrong_method(self, request: Request) -> None:
        """Before ``/v1/videos/{video_id}``: "stream" is a route, not a video id (405, not 404)."""
        raise APIError(405, f"{request.method} is not allowed on /v1/videos/stream; use POST.", code=
                       "method_not_allowed", headers={"Allow": "POST"})

    @app.get("/v1/videos/{video_id}", response_model=VideoObject, responses=_ERRORS)
    async def retrieve_video(self, video_id: str, request: Request) -> JSONResponse:
        await self._authorized_validator(request)
        video = await self.jobs.get(video_id)
        poll = {"openai-poll-after-ms": "250"} if video.status in ("queued", "in_progress") else {}
        return JSONResponse(video.model_dump(), headers=poll)

    @app.delete("/v1/videos/{video_id}", response_model=VideoDeleted, responses=_ERRORS)
    async def delete_video(self, video_id: str, request: Request) -> dict[str, Any]:
        await self._authorized_validator(request)
        return (await self.jobs.delete(video_id)).model_dump()

    @app.get("/v1/videos/{video_id}/content", responses={**_ERRORS, 200: {"content": {"video/mp4": {}}}},
             response_class=Response, summary="Download the MP4")
    async def video_content(self, video_id: str, request: Request,
                            variant: str = Query("video", max_length=32)) -> Response:
        await self._authorized_validator(request)
        if variant != "video":
            raise invalid(f"variant {echo(variant)} is not available; available: ['video'].", "variant")
        content = await self.jobs.content(video_id)
        return Response(content, media_type="video/mp4",
                        headers={"Content-Disposition": f'attachment; filename="{video_id}.mp4"'})

    # -- live streaming (our extension) ----------------------------------------------------------------
    @app.post("/v1/videos/stream", responses={**_ERRORS, 200: {"content": {
        "application/x-ndjson": {}, "multipart/x-mixed-replace": {}, "video/mp4": {}}}},
        response_class=StreamingResponse, summary="Generate and stream a video while it is generated",
        openapi_extra=_body_schema(VideoStreamRequest))
    async def stream_video(self, request: Request) -> StreamingResponse:
        """200 as soon as a generator replica admits the stream (``waiting`` in the header line says if
        it waits for a batch row), 503 + Retry-After if none can."""
        started = time.perf_counter()
        spec = await self._spec(request, stream=True)
        deadline = started + self.settings.request_timeout_s
        chunks, opened = await self._open(spec)
        encoder = make_encoder(spec.format or "ndjson", spec.fps)
        header = {"model": spec.model, "num_frames": spec.num_frames, "seconds": spec.seconds,
                  "size": spec.size, "fps": spec.fps, "seed": spec.seed, "prompt": spec.prompt,
                  "waiting": opened.waiting}
        body = stream_bytes(None, chunks, encoder, header, started, deadline, lambda: cancel_quietly(chunks),
                            request_id_of(request.scope))
        return StreamingResponse(body, media_type=encoder.media_type, headers={
            "Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Video-Seed": str(spec.seed)})

    # -- live sessions (WebSocket) ---------------------------------------------------------------------
    @app.websocket("/v1/videos/live")
    async def live(self, ws: WebSocket) -> None:
        """A live session; protocol in ``live.py`` and serve/README.md. Browsers cannot set headers on
        a WebSocket, so the API key may also come as ``?api_key=``."""
        await ws.accept()
        transport = WebSocketTransport(ws)
        try:
            token = ws.headers.get("authorization") or (
                f"Bearer {ws.query_params['api_key']}" if "api_key" in ws.query_params else None)
            check_bearer(token, self.api_key)
        except APIError as err:
            await transport.send_text(json.dumps({"type": "error", **err.body()}))
            await transport.close(1008)
            return
        info = (await self._get_validator()).info
        model = {"model": info.id, "size": info.size, "fps": info.fps,
                 "pixel_frames_per_chunk": info.pixel_frames_per_chunk}
        backend = ServeLiveBackend(self.text_encoder, self.generator, _is_overload, self.settings.retry_after_s,
                                   request_id_of(ws.scope))
        limits = LiveLimits(self.settings.limits.max_prompt_chars, self.settings.session_idle_timeout_s)
        await LiveSession(transport, backend, limits, lambda: secrets.randbelow(2**31), model,
                          request_id_of(ws.scope)).run()
