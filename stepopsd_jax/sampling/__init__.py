"""KV-cache prefill + `lax.while_loop` decode with padding buckets and on-device stop strings:
the jitted generation (`generation.py`) and its host-side front end (`sampler.py`)."""

from stepopsd_jax.sampling.generation import (
    TRACE_COUNT, Prefilled, SamplingParams, decode, generate_padded, prefill, sample_token)
from stepopsd_jax.sampling.sampler import Buckets, SampleOutput, Sampler, pad_left, slot_counts
from stepopsd_jax.sampling.stop import build_stop_table

__all__ = ["TRACE_COUNT", "Buckets", "Prefilled", "SampleOutput", "Sampler", "SamplingParams",
           "build_stop_table", "decode", "generate_padded", "pad_left", "prefill", "sample_token",
           "slot_counts"]
