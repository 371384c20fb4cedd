"""One rank's step (WorkerTrainer) and the scoring service, in-process: the same numbers as LocalTrainer
however the global batch is split, one critic update per step, and the ordering rules."""

from __future__ import annotations

import copy

import pytest
import torch

from selfforcing.objectives import SampleMeta
from selfforcing.training import CriticRole, GeneratorRole, GuardedOptimizer, LocalTrainer, TrainingConfig
from selfforcing.training.batches import RandomSource
from selfforcing.training.scoring_service import ScorePayload, ScoringService, merge_payloads
from selfforcing.training.worker import BatchLayout, LocalScoringClient, WorkerTrainer


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture
def config() -> TrainingConfig:
    return TrainingConfig(
        rollout={"min_frames": 6, "max_frames": 6}, generator_optim={"lr": 1e-4}, critic_optim={"lr": 1e-3},
        ema={"start_step": 0}, batch_size=4, max_steps=8, critic_steps_per_generator_step=2,
    )


def _roles(platform, config, models, accumulation=1):
    gen, teacher, critic = (copy.deepcopy(m) for m in models)
    optimizer = GuardedOptimizer(gen.parameters(), config.generator_optim, accumulation)
    generator = GeneratorRole(gen, platform, config, optimizer=optimizer)
    return generator, CriticRole(teacher, critic, generator.schedule, config, seed=7)


def test_batch_layout_covers_the_global_batch_once():
    layouts = [BatchLayout(r, 2, 3, 2) for r in range(2)]
    ids = [i for lay in layouts for m in range(2) for i in lay.sample_ids(m)]
    assert sorted(ids) == list(range(12)) and layouts[0].global_batch_size == 12
    with pytest.raises(ValueError, match="rank=2"):
        BatchLayout(2, 2, 3)


def test_source_gives_each_sample_independently_of_the_split(platform):
    src = RandomSource(platform, batch_size=4, num_prompts=3, real_frames=6, seed=1)
    whole = src.batch(5, range(4))
    parts = [src.batch(5, [i]) for i in range(4)]
    assert torch.equal(whole.text, torch.cat([p.text for p in parts]))
    assert torch.equal(whole.real_latents, torch.cat([p.real_latents for p in parts]))
    assert not torch.equal(src.batch(6, range(4)).real_latents, whole.real_latents)
    # every prompt is used once per pass over the set (epoch), in a per-epoch order
    assert sorted(src.prompt_index(0, i) for i in range(3)) == [0, 1, 2]


def test_worker_with_accumulation_equals_local_trainer(platform, config, models):
    """1 rank x 2 micro-batches of 2 == LocalTrainer on the global batch of 4 (generator, EMA, critic)."""
    src = RandomSource(platform, 4, 8, 6, seed=0)
    g1, c1 = _roles(platform, config, models)
    local = LocalTrainer(g1, c1, config)
    for step in range(4):
        local.train_step(src.batch(step, range(4)))
    g2, c2 = _roles(platform, config, models, accumulation=2)
    worker = WorkerTrainer(g2, LocalScoringClient(ScoringService(c2, 2)), config, src, BatchLayout(0, 1, 2, 2))
    records = list(worker.run(4))
    assert [r["step"] for r in records] == [0.0, 1.0, 2.0, 3.0]
    assert (_flat(g1.model) - _flat(g2.model)).abs().max() < 1e-5
    assert (_flat(c1.fake_score) - _flat(c2.fake_score)).abs().max() < 1e-5
    for name, shadow in g1.ema.shadow.items():
        assert (shadow - g2.ema.shadow[name]).abs().max() < 1e-5
    assert worker.state == local.state
    assert records[0]["generator_steps"] == 1 and records[-1]["critic_steps"] == 4


def test_accumulation_must_match_the_optimiser(platform, config, models):
    g, c = _roles(platform, config, models, accumulation=1)
    src = RandomSource(platform, 4, 8, 6)
    with pytest.raises(ValueError, match="averages 1 micro-batches"):
        WorkerTrainer(g, LocalScoringClient(ScoringService(c, 2)), config, src, BatchLayout(0, 1, 2, 2))


def _payload(x, text, step, ids):
    from selfforcing.objectives import Conditioning

    return ScorePayload(x, Conditioning(text), SampleMeta(step=step, sample_ids=tuple(ids)))


def test_scoring_service_updates_once_per_step_over_all_payloads(platform, config, models):
    _, critic = _roles(platform, config, models)
    twin = copy.deepcopy(critic)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 4, 4, 6, generator=g)
    text = torch.randn(4, 16, 32, generator=g)
    service = ScoringService(critic, payloads_per_step=2)
    # the second half arrives first: the update still sees the global batch in sample order
    assert service.add(_payload(x[2:], text[2:], 0, [2, 3])) is False
    assert critic.steps == 0
    assert service.add(_payload(x[:2], text[:2], 0, [0, 1])) is True
    service.run_update(0)
    assert critic.steps == 1 and service.updated_through == 0
    twin.update(x, _payload(x, text, 0, range(4)).cond, meta=SampleMeta(step=0, sample_ids=(0, 1, 2, 3)))
    assert torch.equal(_flat(twin.fake_score), _flat(critic.fake_score))


def test_scoring_service_refuses_out_of_order_work(platform, config, models):
    _, critic = _roles(platform, config, models)
    x, text = torch.randn(2, 6, 4, 4, 6), torch.randn(2, 16, 32)
    service = ScoringService(critic, payloads_per_step=1)
    with pytest.raises(RuntimeError, match="needs the weights after step 0"):
        service.score(_payload(x, text, 1, [0, 1]))
    assert service.add(_payload(x, text, 1, [0, 1]))  # queued early (non-generator steps do not score)
    with pytest.raises(RuntimeError, match="not ready"):
        service.run_update(1)
    service.add(_payload(x, text, 0, [0, 1]))
    service.run_update(0)
    service.run_update(1)
    with pytest.raises(RuntimeError, match="already updated"):
        service.add(_payload(x, text, 1, [0, 1]))


def test_merge_rejects_mixed_steps_and_payloads_need_identity():
    x, text = torch.randn(1, 3, 4, 4, 6), torch.randn(1, 16, 32)
    with pytest.raises(ValueError, match="different steps"):
        merge_payloads([_payload(x, text, 0, [0]), _payload(x, text, 1, [1])])
    from selfforcing.objectives import Conditioning

    with pytest.raises(ValueError, match="meta.step"):
        ScorePayload(x, Conditioning(text), SampleMeta())


def test_critic_draws_do_not_depend_on_the_split(platform, config, models):
    _, critic = _roles(platform, config, models)
    x = torch.randn(4, 6, 4, 4, 6)
    whole = critic.draw(x, SampleMeta(step=3, sample_ids=(0, 1, 2, 3)))
    half = critic.draw(x[2:], SampleMeta(step=3, sample_ids=(2, 3)))
    assert torch.equal(whole.t[2:], half.t) and torch.equal(whole.noise[2:], half.noise)
    other = critic.draw(x, SampleMeta(step=4, sample_ids=(0, 1, 2, 3)))
    assert not torch.equal(other.noise, whole.noise)
