"""End-to-end recipes: whole pipelines (teacher -> ODE init -> Self Forcing -> evaluation) on a world."""
