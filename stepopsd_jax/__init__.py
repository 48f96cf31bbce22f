"""stepopsd_jax: step-level RL (StepOPSD, StepPO and baselines) for multi-turn LLM agents."""

__version__ = "0.1.0"
