"""Datasets as versioned Parquet, sharded, and streamed through Ray Data.

- ``schemas``: the dataset kinds (prompts, latents, videos, embeddings, ode_trajectories), their columns
  and versions, and the check every reader runs.
- ``parquet`` (prompt sets, latents, videos), ``embeddings``, ``trajectories``: writers and readers.
- ``shards``: sharded dataset directories with atomic shards, completion marks and a manifest.
- ``batches``: rows -> typed torch tensors (what a training worker does with each streamed batch).
- ``streaming``: ``read_dataset`` -> ``ray.data.Dataset`` for ``ray.train.get_dataset_shard``.
- ``pipelines``: the Ray Data jobs that write them (encode_prompts, ode_pairs).
- ``toyworld``: the synthetic captioned-video world.
"""
