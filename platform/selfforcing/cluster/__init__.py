"""Connecting a job to Ray: the cluster named by the job (or by `ray job submit`), else an embedded one."""

from .connect import connect_ray

__all__ = ["connect_ray"]
