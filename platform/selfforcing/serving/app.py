"""The Serve application builder that ``serve/config.yaml``'s ``import_path`` names.

``build_app(args)`` is a typed application builder: Serve validates the YAML's ``args`` into
``ServeArgs``. (No ``from __future__ import annotations`` here: Serve inspects the annotation.)
"""

import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field
from ray.serve import Application

from .deployments import GeneratorDeployment, GeneratorSettings, JobStoreDeployment, TextEncoderDeployment
from .ingress import IngressSettings, VideoAPI
from .model_source import ModelSourceArgs
from .validation import Limits


class ServeArgs(ModelSourceArgs):
    """Everything the YAML's ``args`` may set. The model source fields come from ``ModelSourceArgs``."""

    device: str | None = Field(None, description="'cpu', 'cuda', ... (default: the config's runtime.device)")
    torch_threads: int | None = Field(None, gt=0, description="torch intra-op threads per replica")
    max_num_frames: int = Field(81, gt=0, description="server-side maximum video length in pixel frames")
    max_prompt_chars: int = Field(2000, gt=0, description="longest accepted prompt")
    request_timeout_s: float = Field(300.0, gt=0, description="per-request limit for streams and jobs")
    retry_after_s: float = Field(2.0, gt=0, description="Retry-After of 503 answers (and job retries)")
    job_storage: str | None = Field(None, description="directory for finished MP4s (default: a temp dir)")
    max_jobs: int = Field(256, gt=0, description="job records kept (oldest finished evicted first)")
    max_active_jobs: int = Field(32, gt=0, description="queued + running jobs before POST /v1/videos -> 503")
    max_job_bytes: int = Field(2 << 30, gt=0, description="total MP4 bytes kept")
    job_ttl_s: float = Field(3600.0, gt=0, description="finished jobs expire after this many seconds")
    batching: bool = Field(True, description="batch concurrent streams per chunk step (False: one stream "
                           "per model call, streams take turns; the benchmark's baseline)")
    max_streams: int = Field(8, gt=0, description="batch rows per generator replica: streams generating at once")
    max_waiting: int = Field(4, ge=0, description="streams waiting for a row per replica before 503")
    max_sessions: int = Field(4, gt=0, description="live WebSocket sessions per generator replica")
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
    storage = args.job_storage or str(Path(tempfile.gettempdir()) / "selfforcing-serve" / "jobs")
    encoder = TextEncoderDeployment.options(**args.text_encoder_options).bind(
        source, args.device, args.torch_threads
    )
    settings = GeneratorSettings(
        batching=args.batching, max_streams=args.max_streams, max_waiting=args.max_waiting,
        max_sessions=args.max_sessions, window_frames=args.window_frames, max_buffered=args.max_buffered_chunks,
    )
    generator = GeneratorDeployment.options(**args.generator_options).bind(
        source, args.device, args.torch_threads, args.request_timeout_s, settings, args.max_num_frames
    )
    store = JobStoreDeployment.bind(
        storage=storage, max_jobs=args.max_jobs, max_active=args.max_active_jobs,
        max_bytes=args.max_job_bytes, ttl_s=args.job_ttl_s, retry_after_s=args.retry_after_s,
    )
    ingress = IngressSettings(
        limits=Limits(args.max_num_frames, args.max_prompt_chars), request_timeout_s=args.request_timeout_s,
        retry_after_s=args.retry_after_s, api_key=args.api_key, api_key_env=args.api_key_env,
        session_idle_timeout_s=args.session_idle_timeout_s,
    )
    return VideoAPI.options(**args.ingress_options).bind(encoder, generator, store, ingress)
