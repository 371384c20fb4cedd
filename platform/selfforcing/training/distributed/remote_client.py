"""The ``ScoringClient`` of a generator worker talking to its scoring actor through Ray."""

from __future__ import annotations

from typing import Any

from ...objectives import ScoreResult
from ..scoring_service import ScorePayload


class _RayPending:
    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def result(self) -> dict[str, float]:
        import ray

        return ray.get(self.ref)


class RemoteScoringClient:
    """``put`` ships the payload once to the object store; ``score`` and ``update`` both pass the same
    reference, so the sample, its conditioning and metadata cross the network once per micro-batch."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def put(self, payload: ScorePayload) -> Any:
        import ray

        return ray.put(payload)

    def score(self, step: int, handle: Any) -> ScoreResult:
        import ray

        return ray.get(self.actor.score.remote(step, handle))

    def update(self, step: int, handle: Any) -> _RayPending:
        return _RayPending(self.actor.update.remote(step, handle))
