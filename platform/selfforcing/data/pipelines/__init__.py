"""The Ray Data jobs that write the training pipeline's datasets (the library behind ``jobs/``).

- ``encode_prompts``: prompts -> ``embeddings`` with the text encoder in an actor pool.
- ``ode_pairs``: embeddings -> teacher ``ode_trajectories`` over an actor pool, resumable.
- ``runner``: shard tasks over a Ray Data actor pool, the jobs' MLflow runs.
"""

from .config import ActorPoolConfig, EncodePromptsJobConfig, ODEPairsJobConfig, TeacherSource
from .encode_prompts import encode_prompts, read_prompt_source
from .ode_pairs import ode_pairs, pair_seed
from .runner import DataJobResult

__all__ = [
    "ActorPoolConfig",
    "DataJobResult",
    "EncodePromptsJobConfig",
    "ODEPairsJobConfig",
    "TeacherSource",
    "encode_prompts",
    "ode_pairs",
    "pair_seed",
    "read_prompt_source",
]
