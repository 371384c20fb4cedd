"""Training on Ray: the only place that imports ``ray.train`` and ``deepspeed``.

- ``deepspeed_config`` / ``deepspeed_optim``: a role's DeepSpeed config (pure) and its ``RoleOptimizer``.
- ``scoring_actor``: the critic / discriminator actor group (own placement group and process group).
- ``scoring_backend``: Self Forcing's scoring backend over that group (rank 0 owns it).
- ``worker_loop``: the Ray Train loop of every training job (the shared ``training.loop`` with a DeepSpeed
  engine and the process group's collectives).
- ``launch``: ``run_training(job)`` (= ``run_self_forcing`` / ``run_teacher`` / ``run_ode_init``), what
  ``jobs/*.py`` call.
"""

from .deepspeed_config import build_deepspeed_config, inference_config, resolve_precision
from .deepspeed_optim import DeepSpeedOptimizer

__all__ = ["DeepSpeedOptimizer", "build_deepspeed_config", "inference_config", "resolve_precision"]
