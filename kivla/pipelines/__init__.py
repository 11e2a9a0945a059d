"""Orchestration above `kivla.eval`: the demo and the studies, their stages, reports and commands."""
