"""Training on Ray: the only place that imports ``ray.train`` and ``deepspeed``.

- ``deepspeed_config`` / ``deepspeed_optim``: a role's DeepSpeed config (pure) and its ``RoleOptimizer``.
- ``scoring_actor``: the critic / discriminator actor group (own placement group and process group).
- ``worker_loop``: the Ray Train loop of the generator workers.
- ``launch``: ``run_self_forcing(job)``, what ``jobs/self_forcing.py`` calls.
"""

from .deepspeed_config import build_deepspeed_config, inference_config, resolve_precision
from .deepspeed_optim import DeepSpeedOptimizer

__all__ = ["DeepSpeedOptimizer", "build_deepspeed_config", "inference_config", "resolve_precision"]
