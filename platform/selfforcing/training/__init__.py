"""Training roles as plain classes (generator, critic, discriminator), EMA, guarded AdamW, the local
step orchestration and the typed training config. Ray wrappers build on these elsewhere."""

from .config import (
    TRAINING_PRESETS,
    DMDConfig,
    EMAConfig,
    GANConfig,
    OptimConfig,
    RolloutTrainingConfig,
    SiDConfig,
    TrainingConfig,
    TruncationConfig,
    training_preset,
)
from .ema import EMA
from .generator import SAMPLE_SOURCES, GeneratorRole, TrainBatch, register_sample_source
from .local import LocalTrainer, ScoringRole, TrainState
from .optim import GuardedOptimizer, StepOutcome, build_adamw
from .roles import CriticRole, DiscriminatorRole

__all__ = [
    "EMA",
    "SAMPLE_SOURCES",
    "TRAINING_PRESETS",
    "CriticRole",
    "DMDConfig",
    "DiscriminatorRole",
    "EMAConfig",
    "GANConfig",
    "GeneratorRole",
    "GuardedOptimizer",
    "LocalTrainer",
    "OptimConfig",
    "RolloutTrainingConfig",
    "ScoringRole",
    "SiDConfig",
    "StepOutcome",
    "TrainBatch",
    "TrainState",
    "TrainingConfig",
    "TruncationConfig",
    "build_adamw",
    "register_sample_source",
    "training_preset",
]
