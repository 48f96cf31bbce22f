"""KV-cache prefill + `lax.while_loop` decode with padding buckets and on-device stop strings."""

from stepopsd_jax.sampling.sampler import (
    TRACE_COUNT, Buckets, SampleOutput, Sampler, SamplingParams, generate_padded, pad_left,
    sample_token)
from stepopsd_jax.sampling.stop import build_stop_table

__all__ = ["TRACE_COUNT", "Buckets", "SampleOutput", "Sampler", "SamplingParams",
           "build_stop_table", "generate_padded", "pad_left", "sample_token"]
