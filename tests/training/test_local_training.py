"""Local orchestration: update schedule, critic learning, NaN skipping, GAN and CausVid runs."""

from __future__ import annotations

import itertools

import torch

from selfforcing.objectives import Discriminator, ScoreResult
from selfforcing.training import CriticRole, DiscriminatorRole, GeneratorRole, LocalTrainer


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _critic_trainer(platform, train_config, models):
    gen, teacher, critic = models
    generator = GeneratorRole(gen, platform, train_config)
    role = CriticRole(teacher, critic, generator.schedule, train_config, seed=1)
    return generator, role, LocalTrainer(generator, role, train_config)


def test_dmd_run_trains_critic_and_updates_generator_on_schedule(platform, train_config, models, batch):
    generator, critic, trainer = _critic_trainer(platform, train_config, models)
    with torch.no_grad():
        probe = generator.sample(batch, step=10_000).video
    probe_draws = [critic.draw(probe) for _ in range(8)]  # fixed draws: the loss without sampling noise
    cond = batch.conditioning()

    def probe_loss() -> float:
        with torch.no_grad():
            return sum(float(critic.denoising_loss(probe, cond, d)) for d in probe_draws) / len(probe_draws)

    before = probe_loss()
    losses = []

    changed = []
    for _ in range(30):
        prev = _flat(generator.model)
        metrics = trainer.train_step(batch)
        changed.append(not torch.equal(prev, _flat(generator.model)))
        assert metrics["critic_skipped"] == 0
        losses.append(metrics["critic_loss"])
    after = probe_loss()

    assert changed == [step % 5 == 0 for step in range(30)]
    assert trainer.state.generator_steps == 6 and trainer.state.critic_steps == 30
    assert after < 0.9 * before, (before, after)
    assert sum(losses[-5:]) < sum(losses[:5]), losses
    assert generator.ema.active
    assert not torch.equal(generator.ema.shadow["head.head.weight"], generator.model.head.head.weight)


class _NaNOnce:
    """A scorer proxy (duck-typed like a remote actor) whose first gradient is NaN."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def score_gradient(self, x, cond, meta=None, draw=None):
        self.calls += 1
        result = self.inner.score_gradient(x, cond, meta, draw)
        if self.calls == 1:
            return ScoreResult(result.grad * float("nan"), result.metrics)
        return result

    def update(self, x, cond, draw=None, meta=None):
        return self.inner.update(x, cond, draw, meta)


def test_non_finite_steps_are_skipped_and_counted(platform, train_config, models, batch):
    generator, critic, _ = _critic_trainer(platform, train_config, models)
    trainer = LocalTrainer(generator, _NaNOnce(critic), train_config)
    start = _flat(generator.model)
    metrics = trainer.train_step(batch)  # step 0: generator step with a NaN gradient
    assert metrics["generator_skipped"] == 1 and trainer.state.skipped_generator_steps == 1
    assert torch.equal(start, _flat(generator.model))
    assert all(p.grad is None for p in generator.model.parameters())
    assert not generator.ema.active  # the EMA only follows applied steps

    for _ in range(5):
        trainer.train_step(batch)
    assert trainer.state.generator_steps == 1 and trainer.state.skipped_generator_steps == 1
    assert torch.isfinite(_flat(generator.model)).all()

    critic_before = _flat(critic.fake_score)
    bad = batch.conditioning()
    bad.text = bad.text * float("nan")
    m = critic.update(generator.sample(batch, 99).video.detach(), bad)
    assert m["critic_skipped"] == 1 and critic.skipped_steps == 1
    assert torch.equal(critic_before, _flat(critic.fake_score))


def test_sid_and_gan_and_causvid_runs(platform, train_config, models, batch):
    gen, teacher, critic = models
    sid = train_config.model_copy(update={"objective": "sid"})
    generator = GeneratorRole(gen, platform, sid)
    trainer = LocalTrainer(generator, CriticRole(teacher, critic, generator.schedule, sid), sid)
    history = trainer.run(itertools.repeat(batch), num_steps=2)
    assert "sid_loss" in history[0] and trainer.state.generator_steps == 1

    gan = train_config.model_copy(
        update={"objective": "gan", "critic_steps_per_generator_step": 1,
                "gan": train_config.gan.model_copy(update={"r1_weight": 1.0, "relativistic": True})}
    )
    generator = GeneratorRole(gen, platform, gan)
    disc = DiscriminatorRole(Discriminator(critic), generator.schedule, gan)
    history = LocalTrainer(generator, disc, gan).run(itertools.repeat(batch), num_steps=2)
    assert {"gan_g_loss", "gan_d_loss", "r1"} <= set(history[-1]) and history[-1]["generator_steps"] == 2

    causvid = train_config.model_copy(update={"rollout": train_config.rollout.model_copy(update={"kind": "diffusion_forcing"})})
    generator = GeneratorRole(gen, platform, causvid)
    trainer = LocalTrainer(generator, CriticRole(teacher, critic, generator.schedule, causvid), causvid)
    before = _flat(gen)
    trainer.run(itertools.repeat(batch), num_steps=1)
    assert not torch.equal(before, _flat(gen))


def test_plans_agree_across_ranks_and_vary_across_steps(platform, train_config, models):
    cfg = train_config.model_copy(
        update={"rollout": train_config.rollout.model_copy(update={"max_frames": 12, "loss_window_frames": 6})}
    )
    a = GeneratorRole(models[0], platform, cfg, rank=0)
    b = GeneratorRole(models[1], platform, cfg, rank=1)
    plans = [a.plan(s) for s in range(20)]
    assert plans == [b.plan(s) for s in range(20)]
    assert len({p.num_chunks for p in plans}) > 1 and len({p.exit_steps for p in plans}) > 1
