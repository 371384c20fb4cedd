"""Flow-matching schedule, step warping, x0/flow conversions, samplers."""

from .samplers import EulerResult, cfg_flow, euler_sample, few_step_sample, timesteps_like
from .schedule import FlowMatchSchedule

__all__ = ["EulerResult", "FlowMatchSchedule", "cfg_flow", "euler_sample", "few_step_sample", "timesteps_like"]
