"""The Serve application builder that ``serve/config.yaml``'s ``import_path`` names.

``build_app(args)`` is a typed application builder: Serve validates the YAML's ``args`` into
``ServeArgs``. It runs once, before any replica starts (in the driver for ``serve.run``, in the
controller's build task for ``serve run/deploy config.yaml``), so it also creates the MLflow store the
replicas will read. (No ``from __future__ import annotations`` here: Serve inspects the annotation.)
"""

import logging
from typing import Any

from pydantic import Field
from ray.serve import Application

from .deployments import GeneratorDeployment, GeneratorSettings, JobStoreDeployment, TextEncoderDeployment
from .httputil import MAX_BODY_BYTES
from .ingress import IngressSettings, VideoAPI
from .model_source import ModelSourceArgs, prepare_tracking_store, uses_registry
from .validation import Limits

log = logging.getLogger("ray.serve")


class ServeArgs(ModelSourceArgs):
    """Everything the YAML's ``args`` may set. The model source fields come from ``ModelSourceArgs``."""

    device: str | None = Field(None, description="'cpu', 'cuda', ... (default: the config's runtime.device)")
    torch_threads: int | None = Field(None, gt=0, description="torch intra-op threads per replica")
    max_num_frames: int = Field(81, gt=0, description="server-side maximum video length in pixel frames")
    max_prompt_chars: int = Field(2000, gt=0, description="longest accepted prompt")
    request_timeout_s: float = Field(300.0, gt=0, description="per-request limit for streams and jobs")
    retry_after_s: float = Field(2.0, gt=0, description="Retry-After of 503 answers (and job retries)")
    job_storage: str | None = Field(None, description="directory for finished MP4s (default: a fresh temp dir); "
                                    "the job store deletes its MP4s when it shuts down")
    max_jobs: int = Field(256, gt=0, description="job records kept (oldest finished evicted first)")
    max_active_jobs: int = Field(32, gt=0, description="queued + running jobs before POST /v1/videos -> 503")
    max_job_bytes: int = Field(2 << 30, gt=0, description="total MP4 bytes kept")
    job_ttl_s: float = Field(3600.0, gt=0, description="finished jobs expire after this many seconds")
    batching: bool = Field(True, description="batch concurrent streams per chunk step (False: one stream "
                           "per model call, streams take turns; the benchmark's baseline)")
    max_streams: int = Field(8, gt=0, description="batch rows per generator replica: streams generating at once")
    max_waiting: int = Field(4, ge=0, description="streams waiting for a row per replica before 503")
    max_sessions: int = Field(4, gt=0, description="live WebSocket sessions per generator replica (they count "
                              "among its max_streams + max_waiting streams)")
    kv_memory_gb: float | None = Field(None, gt=0, description="device memory per generator replica for K/V "
                                       "rows: the batch cache plus every parked row (null: kv_memory_fraction of "
                                       "the memory free after the model loads on CUDA, unlimited on CPU)")
    kv_memory_fraction: float = Field(0.8, gt=0, le=1, description="see kv_memory_gb")
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024, le=16 << 20, description="larger request bodies "
                                "are refused (413) before they are parsed")
    window_frames: int | None = Field(None, gt=0, description="rolling KV-cache window in latent frames "
                                      "(default: the latent length of max_num_frames)")
    max_buffered_chunks: int = Field(4, gt=0, description="chunks a reader may lag before its stream pauses")
    session_idle_timeout_s: float = Field(60.0, gt=0, description="close a live session after this long "
                                          "without a client message")
    api_key: str | None = Field(None, description="bearer token (prefer api_key_env: no secrets in YAML)")
    api_key_env: str = Field("SELFFORCING_API_KEY", description="environment variable holding the token")
    ingress_options: dict[str, Any] = Field(default_factory=dict, description="Deployment.options for VideoAPI")
    text_encoder_options: dict[str, Any] = Field(default_factory=dict, description="... for TextEncoder")
    generator_options: dict[str, Any] = Field(default_factory=dict, description="... for Generator")

    def source(self) -> ModelSourceArgs:
        return ModelSourceArgs(**{k: getattr(self, k) for k in ModelSourceArgs.model_fields})


def build_app(args: ServeArgs) -> Application:
    """ingress -> (text encoder, generator replicas, job store), composed with deployment handles."""
    source = args.source()
    if uses_registry(source):  # once, before the replicas open it (see model_source)
        log.info("MLflow store ready: %s", prepare_tracking_store(source.tracking_uri))
    encoder = TextEncoderDeployment.options(**args.text_encoder_options).bind(
        source, args.device, args.torch_threads
    )
    settings = GeneratorSettings(
        batching=args.batching, max_streams=args.max_streams, max_waiting=args.max_waiting,
        max_sessions=args.max_sessions, window_frames=args.window_frames, max_buffered=args.max_buffered_chunks,
        kv_memory_bytes=None if args.kv_memory_gb is None else int(args.kv_memory_gb * 2**30),
        kv_memory_fraction=args.kv_memory_fraction,
    )
    generator = GeneratorDeployment.options(**args.generator_options).bind(
        source, args.device, args.torch_threads, args.request_timeout_s, settings, args.max_num_frames
    )
    store = JobStoreDeployment.bind(
        storage=args.job_storage, max_jobs=args.max_jobs, max_active=args.max_active_jobs,
        max_bytes=args.max_job_bytes, ttl_s=args.job_ttl_s, retry_after_s=args.retry_after_s,
    )
    ingress = IngressSettings(
        limits=Limits(args.max_num_frames, args.max_prompt_chars), request_timeout_s=args.request_timeout_s,
        retry_after_s=args.retry_after_s, api_key=args.api_key, api_key_env=args.api_key_env,
        session_idle_timeout_s=args.session_idle_timeout_s, max_body_bytes=args.max_body_bytes,
    )
    return VideoAPI.options(**args.ingress_options).bind(encoder, generator, store, ingress)
