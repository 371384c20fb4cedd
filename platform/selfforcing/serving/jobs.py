"""The video job store: OpenAI-style video objects with status/progress, their MP4s on disk, limits.

One ``JobStore`` serves every ingress replica (it runs in a single-replica Serve deployment; see
``deployments.JobStoreDeployment``), so a job created through one replica is visible from all.
Bounded: at most ``max_jobs`` records and ``max_bytes`` of MP4s; finished jobs expire after ``ttl_s``
and the oldest finished ones are evicted first when a limit is reached. Records are typed
(``schemas.VideoObject``, ``validation.GenerationSpec``); ``close`` deletes the store's MP4s (and its
folder when it made one), so nothing is left in a shared temp folder after shutdown.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import APIError, echo, invalid, not_found, overloaded
from .schemas import VideoDeleted, VideoError, VideoList, VideoObject
from .validation import GenerationSpec

log = logging.getLogger(__name__)

ACTIVE = ("queued", "in_progress")


@dataclass
class _Job:
    video: VideoObject
    spec: GenerationSpec
    path: Path | None = None
    nbytes: int = 0


class JobStore:
    """In-memory job records plus MP4 files under ``storage`` (None: a fresh temporary folder, removed
    by ``close``); ``clock`` is injectable for tests."""

    def __init__(
        self,
        storage: str | Path | None,
        max_jobs: int = 256,
        max_active: int = 32,
        max_bytes: int = 2 << 30,
        ttl_s: float = 3600.0,
        retry_after_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.own_storage = storage is None
        self.storage = Path(tempfile.mkdtemp(prefix="selfforcing-jobs-")) if storage is None else Path(storage)
        self.storage.mkdir(parents=True, exist_ok=True)
        self.max_jobs, self.max_active, self.max_bytes = max_jobs, max_active, max_bytes
        self.ttl_s, self.retry_after_s, self.clock = ttl_s, retry_after_s, clock
        self._jobs: dict[str, _Job] = {}  # insertion order == creation order

    # -- lifecycle -------------------------------------------------------------------------------------
    def create(self, spec: GenerationSpec) -> VideoObject:
        """A new queued job; 503 (retry later) when too many are running or the store is full."""
        self.expire()
        if sum(j.video.status in ACTIVE for j in self._jobs.values()) >= self.max_active:
            raise overloaded(f"{self.max_active} video jobs are already queued or running; retry later.",
                             self.retry_after_s)
        if len(self._jobs) >= self.max_jobs and not self._evict_one():
            raise overloaded(f"the job store is full ({self.max_jobs} jobs); retry later.", self.retry_after_s)
        video_id = f"video_{secrets.token_hex(12)}"
        video = VideoObject(
            id=video_id, status="queued", created_at=int(self.clock()), model=spec.model, prompt=spec.prompt,
            seconds=spec.seconds, size=spec.size, num_frames=spec.num_frames, seed=spec.seed, fps=spec.fps,
        )
        self._jobs[video_id] = _Job(video=video, spec=spec)
        return video.model_copy()

    def update(self, video_id: str, progress: float) -> VideoObject | None:
        """Mark in progress with ``progress`` in [0, 100]; None when the job was deleted meanwhile."""
        job = self._jobs.get(video_id)
        if job is None or job.video.status not in ACTIVE:
            return None
        job.video.status = "in_progress"
        job.video.progress = int(max(job.video.progress, min(99, progress)))
        return job.video.model_copy()

    def complete(self, video_id: str, content: bytes) -> VideoObject | None:
        job = self._jobs.get(video_id)
        if job is None:
            return None  # deleted while generating: drop the result
        path = self.storage / f"{video_id}.mp4"
        path.write_bytes(content)
        now = int(self.clock())
        job.path, job.nbytes = path, len(content)
        job.video.status, job.video.progress = "completed", 100
        job.video.completed_at, job.video.expires_at = now, int(now + self.ttl_s)
        while self._total_bytes() > self.max_bytes and self._evict_one(keep=video_id):
            pass
        return job.video.model_copy()

    def fail(self, video_id: str, code: str, message: str) -> VideoObject | None:
        job = self._jobs.get(video_id)
        if job is None:
            return None
        now = int(self.clock())
        job.video.status, job.video.completed_at, job.video.expires_at = "failed", now, int(now + self.ttl_s)
        job.video.error = VideoError(code=code, message=message)
        return job.video.model_copy()

    # -- reads -----------------------------------------------------------------------------------------
    def get(self, video_id: str) -> VideoObject:
        self.expire()
        job = self._jobs.get(video_id)
        if job is None:
            raise not_found("video", video_id)
        return job.video.model_copy()

    def spec(self, video_id: str) -> GenerationSpec:
        self.get(video_id)
        return self._jobs[video_id].spec

    def list(self, after: str | None = None, limit: int = 20, order: str = "desc") -> VideoList:
        """OpenAI's cursor page: ``data``, ``first_id``, ``last_id``, ``has_more``."""
        if not 1 <= limit <= 100:
            raise invalid(f"'limit' must be in [1, 100], got {echo(limit)}.", "limit")
        if order not in ("asc", "desc"):
            raise invalid(f"'order' must be 'asc' or 'desc', got {echo(order)}.", "order")
        self.expire()
        videos = [j.video.model_copy() for j in self._jobs.values()]
        if order == "desc":
            videos.reverse()
        if after is not None:
            ids = [v.id for v in videos]
            if after not in ids:
                raise not_found("video", after, "after")
            videos = videos[ids.index(after) + 1:]
        page = videos[:limit]
        return VideoList(data=page, first_id=page[0].id if page else None, last_id=page[-1].id if page else None,
                         has_more=len(videos) > limit)

    def content(self, video_id: str) -> bytes:
        video = self.get(video_id)
        job = self._jobs[video_id]
        if video.status != "completed" or job.path is None:
            raise APIError(400, f"video {echo(video_id)} is {video.status}; content exists once completed.",
                           "invalid_request_error", "video_id", "video_not_ready")
        return job.path.read_bytes()

    def delete(self, video_id: str) -> VideoDeleted:
        self.get(video_id)
        self._drop(video_id)
        return VideoDeleted(id=video_id)

    def stats(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self._jobs.values():
            counts[job.video.status] = counts.get(job.video.status, 0) + 1
        return {"jobs": len(self._jobs), "bytes": self._total_bytes(), **counts}

    def close(self) -> None:
        """Delete every MP4 this store wrote (and its folder if it made it): called at shutdown."""
        for video_id in list(self._jobs):
            self._drop(video_id)
        if self.own_storage:
            shutil.rmtree(self.storage, ignore_errors=True)
        log.info("job store closed: MP4s under %s deleted", self.storage)

    # -- limits ----------------------------------------------------------------------------------------
    def expire(self) -> int:
        """Drop finished jobs past ``expires_at``; returns how many."""
        now = self.clock()
        dead = [k for k, j in self._jobs.items() if j.video.expires_at is not None and j.video.expires_at <= now]
        for video_id in dead:
            self._drop(video_id)
        return len(dead)

    def _evict_one(self, keep: str | None = None) -> bool:
        for video_id, job in self._jobs.items():  # oldest first
            if job.video.status not in ACTIVE and video_id != keep:
                self._drop(video_id)
                return True
        return False

    def _drop(self, video_id: str) -> None:
        job = self._jobs.pop(video_id, None)
        if job is not None and job.path is not None:
            job.path.unlink(missing_ok=True)

    def _total_bytes(self) -> int:
        return sum(j.nbytes for j in self._jobs.values())
