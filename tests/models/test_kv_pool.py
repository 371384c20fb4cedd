"""KVCachePool: caches (and their buffers) reused across generations, reset, bounded."""

import threading

import pytest
import torch

from selfforcing.config import load_config
from selfforcing.diffusion.samplers import timesteps_like
from selfforcing.models import WanDiT
from selfforcing.models.kv_cache import KVCachePool


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return WanDiT(load_config("tiny").model).eval()


def _fill(model, cache, text):
    x = torch.randn(1, 3, 4, 4, 6)
    with torch.no_grad():
        model(x, timesteps_like(x, 0.0), text, kv_cache=cache, start_frame=0)


def test_a_returned_cache_comes_back_reset_with_its_buffers(model):
    pool = KVCachePool(max_idle=1)
    made = []

    def make():
        made.append(model.new_kv_cache(1, max_frames=6))
        return made[-1]

    cache = pool.lease("a", make)
    text = torch.randn(1, 16, 32)
    _fill(model, cache, text)
    assert cache.frames_written == 3 and cache.text_kv[0] is not None
    k_ptr = cache.k.data_ptr()
    pool.give_back("a", cache)
    again = pool.lease("a", make)
    assert again is cache and len(made) == 1 and len(pool) == 0
    assert again.frames_written == 0 and again.text_key is None and all(t is None for t in again.text_kv)
    _fill(model, again, text)
    assert again.k.data_ptr() == k_ptr  # no new allocation
    other = pool.lease("b", make)
    assert other is not cache and len(made) == 2


def test_the_pool_keeps_at_most_max_idle_caches(model):
    pool = KVCachePool(max_idle=2)
    caches = [model.new_kv_cache(1, max_frames=3 * (i + 1)) for i in range(3)]
    for i, c in enumerate(caches):
        pool.give_back(i, c)
    assert len(pool) == 2
    assert pool.lease(0, lambda: "new") == "new"  # the oldest was dropped
    assert pool.lease(2, lambda: "new") is caches[2]
    with pytest.raises(ValueError, match="max_idle=-1"):
        KVCachePool(max_idle=-1)


def test_concurrent_leases_never_share_a_cache(model):
    pool = KVCachePool(max_idle=4)
    for _ in range(4):
        pool.give_back("k", model.new_kv_cache(1, max_frames=3))
    got, lock = [], threading.Lock()

    def worker():
        c = pool.lease("k", lambda: model.new_kv_cache(1, max_frames=3))
        with lock:
            got.append(c)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in got}) == 8
