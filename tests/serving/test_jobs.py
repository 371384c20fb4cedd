"""JobStore: lifecycle, OpenAI list pages, limits (503), expiry and eviction."""

from __future__ import annotations

import pytest

from selfforcing.serving.errors import APIError
from selfforcing.serving.jobs import JobStore
from selfforcing.serving.validation import GenerationSpec

SPEC = GenerationSpec(prompt="a ball", num_frames=21, seed=1, negative_prompt=None, model="m", fps=8,
                      size="48x32", seconds="2.625")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def store(tmp_path, clock, **kw) -> JobStore:
    return JobStore(tmp_path, clock=clock, **kw)


def test_lifecycle(tmp_path, clock):
    jobs = store(tmp_path, clock, ttl_s=60)
    video = jobs.create(SPEC)
    assert video.status == "queued" and video.object == "video" and video.seconds == "2.625"
    assert jobs.update(video.id, 50).status == "in_progress"
    with pytest.raises(APIError) as err:
        jobs.content(video.id)
    assert err.value.code == "video_not_ready"
    done = jobs.complete(video.id, b"mp4!")
    assert (done.status, done.progress, done.expires_at) == ("completed", 100, 1060)
    assert jobs.content(video.id) == b"mp4!"
    assert jobs.delete(video.id).model_dump() == {"id": video.id, "object": "video.deleted", "deleted": True}
    with pytest.raises(APIError) as err:
        jobs.get(video.id)
    assert err.value.status == 404
    assert not list(tmp_path.glob("*.mp4"))


def test_failed_job_and_deleted_while_running(tmp_path, clock):
    jobs = store(tmp_path, clock)
    a, b = jobs.create(SPEC), jobs.create(SPEC)
    assert jobs.fail(a.id, "timeout", "too slow").error.model_dump() == {"code": "timeout", "message": "too slow"}
    jobs.delete(b.id)
    assert jobs.update(b.id, 10) is None and jobs.complete(b.id, b"x") is None


def test_list_pages(tmp_path, clock):
    jobs = store(tmp_path, clock)
    ids = [jobs.create(SPEC).id for _ in range(5)]
    page = jobs.list(limit=2)
    assert [v.id for v in page.data] == ids[::-1][:2] and page.has_more
    rest = jobs.list(after=page.last_id, limit=10)
    assert [v.id for v in rest.data] == ids[::-1][2:] and not rest.has_more
    assert [v.id for v in jobs.list(order="asc").data] == ids
    with pytest.raises(APIError):
        jobs.list(limit=0)


def test_limits_answer_503_with_retry_after(tmp_path, clock):
    jobs = store(tmp_path, clock, max_active=2, max_jobs=3, retry_after_s=3)
    a, b = jobs.create(SPEC), jobs.create(SPEC)
    with pytest.raises(APIError) as err:
        jobs.create(SPEC)
    assert err.value.status == 503 and err.value.headers["Retry-After"] == "3"
    jobs.complete(a.id, b"1")
    jobs.complete(b.id, b"2")
    c = jobs.create(SPEC)
    jobs.complete(c.id, b"3")
    jobs.create(SPEC)  # full: the oldest finished job is evicted
    assert jobs.stats()["jobs"] == 3
    with pytest.raises(APIError):
        jobs.get(a.id)


def test_expiry_and_byte_budget(tmp_path, clock):
    jobs = store(tmp_path, clock, ttl_s=10, max_bytes=10)
    a = jobs.create(SPEC)
    jobs.complete(a.id, b"x" * 6)
    b = jobs.create(SPEC)
    jobs.complete(b.id, b"y" * 6)  # over the byte budget: the older video goes
    assert [v.id for v in jobs.list().data] == [b.id]
    clock.now += 11
    assert jobs.list().data == []


def test_close_deletes_the_stores_mp4s_and_its_own_folder(tmp_path, clock):
    given = store(tmp_path, clock)
    other = tmp_path / "someone-elses.mp4"
    other.write_bytes(b"keep")
    for _ in range(2):
        given.complete(given.create(SPEC).id, b"mp4")
    assert len(list(tmp_path.glob("video_*.mp4"))) == 2
    given.close()
    assert not list(tmp_path.glob("video_*.mp4")) and other.exists()  # only its own files
    own = JobStore(None, clock=clock)  # no folder given: a fresh temporary one, removed on close
    own.complete(own.create(SPEC).id, b"mp4")
    folder = own.storage
    assert len(list(folder.glob("*.mp4"))) == 1
    own.close()
    assert not folder.exists()
