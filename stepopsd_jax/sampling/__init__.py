"""KV-cache prefill + `lax.while_loop` decode with padding buckets and on-device stop strings."""

from stepopsd_jax.sampling.sampler import (
    TRACE_COUNT, Buckets, Prefilled, SampleOutput, Sampler, SamplingParams, decode,
    generate_padded, pad_left, prefill, sample_token, slot_counts)
from stepopsd_jax.sampling.stop import build_stop_table

__all__ = ["TRACE_COUNT", "Buckets", "Prefilled", "SampleOutput", "Sampler", "SamplingParams",
           "build_stop_table", "decode", "generate_padded", "pad_left", "prefill", "sample_token",
           "slot_counts"]
