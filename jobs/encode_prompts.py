"""Prompts -> text embeddings (Parquet shards), the text encoder in a Ray Data actor pool.

    python jobs/encode_prompts.py --config jobs/configs/tiny_encode_prompts.yaml [key.sub=value ...]
    ray job submit --working-dir . -- python jobs/encode_prompts.py --config jobs/configs/...yaml

A rerun with the same output skips the shards already written. See jobs/README.md.
"""

from __future__ import annotations

import argparse
import json

from selfforcing.config.job import load_job_config
from selfforcing.data.pipelines import EncodePromptsJobConfig, encode_prompts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="prompts -> text embeddings (Parquet shards)")
    parser.add_argument("--config", required=True, help="job YAML (see jobs/configs/*_encode_prompts.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. pool.size=4 max_shards=2")
    args = parser.parse_args(argv)
    result = encode_prompts(load_job_config(EncodePromptsJobConfig, args.config, args.overrides))
    print(json.dumps(result.summary()))


if __name__ == "__main__":
    main()
