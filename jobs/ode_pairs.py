"""Prompt embeddings -> teacher ODE trajectories (Parquet shards) over a Ray Data actor pool.

    python jobs/ode_pairs.py --config jobs/configs/tiny_ode_pairs.yaml [key.sub=value ...]
    ray job submit --working-dir . -- python jobs/ode_pairs.py --config jobs/configs/...yaml

Resumable: a rerun with the same output computes only the shards not yet finished. See jobs/README.md.
"""

from __future__ import annotations

import argparse
import json

from selfforcing.config.job import load_job_config
from selfforcing.data.pipelines import ODEPairsJobConfig, ode_pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="embeddings -> teacher ODE trajectories (Parquet shards)")
    parser.add_argument("--config", required=True, help="job YAML (see jobs/configs/*_ode_pairs.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. pool.size=4 seed=1")
    args = parser.parse_args(argv)
    result = ode_pairs(load_job_config(ODEPairsJobConfig, args.config, args.overrides))
    print(json.dumps(result.summary()))


if __name__ == "__main__":
    main()
