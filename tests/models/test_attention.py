import pytest
import torch

from selfforcing.models.attention import AttentionPattern, attention, chunked_attention


def _dense(q, k, v, mask):
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)


@pytest.mark.parametrize("chunk, window, sink", [(3, None, 0), (1, None, 0), (3, 6, 0), (3, 7, 2), (2, 4, 1)])
def test_chunked_attention_equals_dense_mask(chunk, window, sink):
    torch.manual_seed(0)
    frames, tpf = 12, 5
    q, k, v = (torch.randn(2, frames * tpf, 2, 8, dtype=torch.float64) for _ in range(3))
    pattern = AttentionPattern(chunk, window, sink)
    mask = pattern.frame_mask(frames).repeat_interleave(tpf, 0).repeat_interleave(tpf, 1)
    out = chunked_attention(q, k, v, pattern, tpf)
    torch.testing.assert_close(out, _dense(q, k, v, mask))


def test_pattern_semantics():
    # Window of 6 with 2 sinks: the last chunk (frames 9..11) sees sinks 0,1 and frames 8..11.
    p = AttentionPattern(3, 6, 2)
    assert p.visible_ranges(12) == [(0, 2), (8, 12)]
    m = p.frame_mask(12)
    assert m[9].nonzero().flatten().tolist() == [0, 1, 8, 9, 10, 11]
    # Block-causal: a frame sees its whole chunk, nothing later.
    full = AttentionPattern(3).frame_mask(6)
    assert full[0].tolist() == [True, True, True, False, False, False]


def test_bad_patterns_fail_clearly():
    with pytest.raises(ValueError, match="must hold a whole chunk"):
        AttentionPattern(3, 4, 2)
    with pytest.raises(ValueError, match="sink_frames needs window_frames"):
        AttentionPattern(3, None, 1)


def test_attention_matches_reference_softmax():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 7, 3, 4, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(attention(q, k, v), _dense(q, k, v, torch.ones(7, 7, dtype=torch.bool)))
