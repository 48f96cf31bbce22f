"""The jitted sampler against full-recompute `models.logits`; stops; compile counts."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepopsd_jax import models, sampling

BUCKETS = sampling.Buckets(batch=(2, 4), prompt=(8, 16))


@pytest.fixture(scope="module")
def tiny():
  config = models.get_preset("qwen3_tiny")
  return config, models.init_params(config, jax.random.key(0))


PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [3]]


def _reference_greedy(config, weights, prompt, n):
  seq = list(prompt)
  for _ in range(n):
    seq.append(int(jnp.argmax(models.logits(config, weights, jnp.asarray([seq]))[0, -1])))
  return seq[len(prompt):]


def test_greedy_equals_stepwise_argmax_of_full_recompute(tiny):
  config, weights = tiny
  s = sampling.Sampler(config, sampling.SamplingParams(max_new_tokens=6, temperature=0.0),
                       pad_id=0, buckets=BUCKETS)
  out = s.generate(weights, PROMPTS, jax.random.key(1))
  for i, prompt in enumerate(PROMPTS):
    assert list(out.tokens[i]) == _reference_greedy(config, weights, prompt, 6)
  assert list(out.lengths) == [6, 6, 6] and not out.stopped.any()


def test_behaviour_logprobs_equal_teacher_forced_log_softmax(tiny):
  config, weights = tiny
  s = sampling.Sampler(config, sampling.SamplingParams(max_new_tokens=7, temperature=1.0),
                       pad_id=0, buckets=BUCKETS)
  out = s.generate(weights, PROMPTS, jax.random.key(2))
  for i, prompt in enumerate(PROMPTS):
    seq = jnp.asarray([list(prompt) + list(out.tokens[i])])
    logp = jax.nn.log_softmax(models.logits(config, weights, seq)[0], axis=-1)
    positions = np.arange(len(prompt) - 1, seq.shape[1] - 1)
    expected = np.asarray(logp[positions, out.tokens[i]])
    np.testing.assert_allclose(out.logprobs[i], expected, atol=1e-4)


def test_same_key_same_samples_and_top_k_1_is_greedy(tiny):
  config, weights = tiny
  hot = sampling.Sampler(config, sampling.SamplingParams(max_new_tokens=5, temperature=1.5),
                         pad_id=0, buckets=BUCKETS)
  a = hot.generate(weights, PROMPTS, jax.random.key(3))
  b = hot.generate(weights, PROMPTS, jax.random.key(3))
  np.testing.assert_array_equal(a.tokens, b.tokens)
  greedy = sampling.Sampler(config, sampling.SamplingParams(max_new_tokens=5, temperature=0.0),
                            pad_id=0, buckets=BUCKETS).generate(weights, PROMPTS, jax.random.key(0))
  for params in (sampling.SamplingParams(max_new_tokens=5, temperature=1.0, top_k=1),
                 sampling.SamplingParams(max_new_tokens=5, temperature=1.0, top_p=1e-6)):
    out = sampling.Sampler(config, params, pad_id=0, buckets=BUCKETS).generate(
        weights, PROMPTS, jax.random.key(4))
    np.testing.assert_array_equal(out.tokens, greedy.tokens)


def test_stop_token_and_stop_string_end_rows(tiny):
  config, weights = tiny
  greedy = sampling.Sampler(config, sampling.SamplingParams(max_new_tokens=6, temperature=0.0),
                            pad_id=0, buckets=BUCKETS).generate(weights, PROMPTS, jax.random.key(0))
  # Stop token: the third greedy token of row 0.
  stop_id = int(greedy.tokens[0, 2])
  out = sampling.Sampler(
      config, sampling.SamplingParams(max_new_tokens=6, temperature=0.0, stop_token_ids=(stop_id,)),
      pad_id=0, buckets=BUCKETS).generate(weights, PROMPTS, jax.random.key(0))
  first = list(greedy.tokens[0]).index(stop_id)
  assert out.lengths[0] == first + 1 and out.stopped[0]
  assert np.all(out.logprobs[0, first + 1:] == 0)
  # Stop string spread over two tokens: name every token by its id, stop on the text of the
  # second and third generated tokens of row 1 written together.
  texts = [f"<{i}>" for i in range(config.vocab_size)]
  t1, t2 = int(greedy.tokens[1, 1]), int(greedy.tokens[1, 2])
  out = sampling.Sampler(
      config, sampling.SamplingParams(max_new_tokens=6, temperature=0.0,
                                      stop_strings=(f"{t1}><{t2}>",)),
      pad_id=0, token_texts=texts, buckets=BUCKETS).generate(weights, PROMPTS, jax.random.key(0))
  stop_text = f"{t1}><{t2}>"
  first_match = next(n for n in range(1, 7)
                     if stop_text in "".join(texts[t] for t in greedy.tokens[1, :n]))
  assert first_match <= 3 and out.lengths[1] == first_match and out.stopped[1]


def test_one_compile_per_bucket_pair(tiny):
  config, weights = tiny
  s = sampling.Sampler(config, sampling.SamplingParams(max_new_tokens=3, temperature=1.0),
                       pad_id=0, buckets=BUCKETS)
  before = dict(sampling.TRACE_COUNT)
  traced = lambda: {k: sampling.TRACE_COUNT[k] - before[k]
                    for k in ("prefill", "prefill_packed", "generate")}
  for turn, n in enumerate([1, 2, 3, 5, 7, 8]):  # all in prompt bucket 8, batch bucket 2
    s.generate(weights, [list(range(1, n + 1)), [4] * (9 - n)], jax.random.key(turn))
  assert traced() == {"prefill": 1, "prefill_packed": 0, "generate": 1}  # 9 tokens: 2 rows
  for turn, n in enumerate([1, 4, 11, 13]):  # prompt bucket 16; both fit in one packed row
    s.generate(weights, [[1] * n, [2] * (14 - n)], jax.random.key(turn))
  assert traced() == {"prefill": 1, "prefill_packed": 1, "generate": 2}


def test_overlong_prompt_is_cut_from_the_left_and_counted(tiny):
  config, weights = tiny
  s = sampling.Sampler(config, sampling.SamplingParams(max_new_tokens=2, temperature=0.0),
                       pad_id=0, buckets=BUCKETS)
  long_prompt = list(range(1, 40))
  out = s.generate(weights, [long_prompt, [1, 2]], jax.random.key(0))
  assert out.truncated_prompts == 1
  assert list(out.tokens[0]) == _reference_greedy(config, weights, long_prompt[-16:], 2)


def test_stop_table_matches_across_token_boundaries():
  texts = ["</", "action", ">", "x", "</action>", "ab", "a", "b", "c", "<", "/"]
  table = sampling.build_stop_table(texts, ["</action>", "abc"])
  accept = table.shape[0] - 1

  def stops(seq):
    state = 0
    for piece in seq:
      state = table[state, texts.index(piece)]
    return state == accept

  assert stops(["</", "action", ">"]) and stops(["x", "</action>"]) and stops(["a", "ab", "c"])
  assert stops(["<", "/", "action", ">"]) and stops(["ab", "c"])
  assert not stops(["</", "action", "x"]) and not stops(["a", "b", "x", "c"])
  with pytest.raises(ValueError, match="empty"):
    sampling.build_stop_table(texts, [""])


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_behaviour_logprobs_equal_the_train_steps_at_the_same_temperature(tiny, temperature):
  """The PPO ratio's denominator (sampler, KV cache, one token at a time) and its numerator
  (the train step's batched forward over left-padded prompts) score a token alike."""
  from stepopsd_jax.sampling import pad_left  # pylint: disable=g-import-not-at-top
  from stepopsd_jax.train.forward import response_logprobs  # pylint: disable=g-import-not-at-top
  config, weights = tiny
  s = sampling.Sampler(config, sampling.SamplingParams(max_new_tokens=6, temperature=temperature),
                       pad_id=0, buckets=BUCKETS)
  out = s.generate(weights, PROMPTS, jax.random.key(4))
  prompt, prompt_mask = pad_left(PROMPTS, 16, 0, len(PROMPTS))
  response_mask = np.arange(6)[None] < out.lengths[:, None]
  logp, _ = response_logprobs(config, weights, prompt, prompt_mask, out.tokens, response_mask,
                              temperature)
  np.testing.assert_allclose(np.where(response_mask, np.asarray(logp), 0.0), out.logprobs,
                             atol=1e-4)


@pytest.mark.parametrize("vocab", [200, 64, 7])  # not a multiple of the block; one block; < one
def test_draws_follow_the_softmax_and_never_a_truncated_token(vocab):
  """Frequencies of 60,000 draws against softmax(logits) computed in numpy."""
  rs = np.random.RandomState(vocab)
  logits = rs.randn(vocab).astype(np.float32) * 2
  logits[rs.choice(vocab, vocab // 4, replace=False)] = -np.inf  # truncated tokens
  n = 60_000
  draws = np.asarray(sampling.generation.categorical(
      jax.random.key(0), jnp.broadcast_to(jnp.asarray(logits), (n, vocab))))
  p = np.exp(logits - logits[np.isfinite(logits)].max())
  p /= p.sum()
  freq = np.bincount(draws, minlength=vocab) / n
  assert freq[~np.isfinite(logits)].sum() == 0
  sigma = np.sqrt(p * (1 - p) / n) + 1e-9
  assert np.max(np.abs(freq - p) / sigma) < 5.5, np.max(np.abs(freq - p) / sigma)
  # the whole distribution, not only per token: total variation within sampling noise
  assert 0.5 * np.abs(freq - p).sum() < 0.02


def test_first_argmax_is_numpy_argmax_ties_included():
  x = np.asarray([[1, 3, 3, 0], [5, 5, 5, 5], [-np.inf, -1, -np.inf, -2]], np.float32)
  x = np.concatenate([x, np.random.RandomState(0).randn(50, 4).astype(np.float32)])
  np.testing.assert_array_equal(sampling.generation.first_argmax(jnp.asarray(x)), np.argmax(x, -1))


def test_repeated_prompts_are_prefilled_once_and_decode_as_before(tiny):
  """A group's rows share their prompt: the prefill runs on the 2 distinct prompts; greedy rows
  equal a full recompute, and sampled rows equal the unshared sampler's (same key)."""
  config, weights = tiny
  a, b = PROMPTS[0], PROMPTS[1]
  batch = [a, b, a, a]
  greedy = sampling.Sampler(config, sampling.SamplingParams(max_new_tokens=5, temperature=0.0),
                            pad_id=0, buckets=sampling.Buckets(batch=(2, 4), prompt=(16,)),
                            pack_prompts=False)
  out = greedy.generate(weights, batch, jax.random.key(0))
  for i, prompt in enumerate(batch):
    assert list(out.tokens[i]) == _reference_greedy(config, weights, prompt, 5), i
  assert out.stats["prompt_rows_shared"] == 2
  assert out.stats["prompt_slots"] == 2 * 16  # the distinct prompts' bucket, not 4 rows
  assert out.stats["prompt_tokens"] == len(a) + len(b)
  params = sampling.SamplingParams(max_new_tokens=6, temperature=1.0)
  shared, unshared = (sampling.Sampler(config, params, pad_id=0, share_prompts=share,
                                       buckets=sampling.Buckets(batch=(2, 4, 8), prompt=(16,)),
                                       pack_prompts=False)
                      for share in (True, False))
  batch = [a, a, b, a, b]  # 5 rows in a bucket of 8: three padding rows
  got, want = (s.generate(weights, batch, jax.random.key(7)) for s in (shared, unshared))
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)
  np.testing.assert_array_equal(got.lengths, want.lengths)
  assert got.stats["decode_padding_row_slots"] == want.stats["decode_padding_row_slots"] == 3 * 6
  assert len({tuple(t) for t in got.tokens[[0, 1, 3]]}) > 1  # each row drew its own tokens
  # the bucket's padding rows start finished, whichever prefilled row they were given
  tokens, mask, _ = shared.pad([a, b])
  state = sampling.prefill(config, params, weights, tokens, mask, jax.random.key(7))
  rows = sampling.generation.share_rows(state, np.array([0, 0, 1, 0, 1, 0, 0, 0], np.int32),
                                     np.arange(8) < 5)
  assert np.asarray(rows.empty).tolist() == [False] * 5 + [True] * 3
  np.testing.assert_array_equal(rows.logits[2], state.logits[1])


def test_packed_prompts_decode_as_a_full_recompute_and_as_unpacked(tiny):
  """Six prompts of 1-10 tokens pack into 2 prefill rows of 16 instead of 8: greedy rows equal a
  full recompute of each prompt alone, sampled rows the unpacked sampler's (same key)."""
  config, weights = tiny
  batch = [[5, 6, 7], list(range(20, 30)), [3], [40, 41, 42, 43, 44], list(range(50, 57)),
           [60, 61]]
  buckets = sampling.Buckets(batch=(8,), prompt=(16,))
  greedy = sampling.Sampler(config, sampling.SamplingParams(max_new_tokens=5, temperature=0.0),
                            pad_id=0, buckets=buckets)
  out = greedy.generate(weights, batch, jax.random.key(0))
  for i, prompt in enumerate(batch):
    assert list(out.tokens[i]) == _reference_greedy(config, weights, prompt, 5), i
  assert out.stats["prefill_rows"] == 2 and out.stats["prefill_rows_unpacked"] == 8
  assert out.stats["prompt_slots"] == 2 * 16
  assert out.stats["prompt_tokens"] == sum(map(len, batch))
  assert out.stats["decode_padding_row_slots"] == 2 * 5  # 6 rows in the decode's bucket of 8
  params = sampling.SamplingParams(max_new_tokens=6, temperature=1.0)
  packed, unpacked = (sampling.Sampler(config, params, pad_id=0, buckets=buckets,
                                       pack_prompts=pack) for pack in (True, False))
  batch = batch + [batch[1]]  # a repeated prompt too: shared, then packed
  got, want = (s.generate(weights, batch, jax.random.key(7)) for s in (packed, unpacked))
  assert got.stats["prefill_rows"] == 2 and got.stats["prompt_rows_shared"] == 1
  assert want.stats["prefill_rows"] == 8
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)
  np.testing.assert_array_equal(got.lengths, want.lengths)


def test_waiting_for_the_parameters_is_not_counted_as_prefill(tiny):
  """Parameters still being computed (the trainer dispatches a step before the next rollout)
  are waited for in `wait_params_s`, not in the prefill."""
  config, weights = tiny
  s = sampling.Sampler(config, sampling.SamplingParams(max_new_tokens=2, temperature=0.0),
                       pad_id=0, buckets=BUCKETS)
  s.generate(weights, PROMPTS, jax.random.key(0))  # compiles

  @jax.jit
  def slow_copy(w, m):  # ~0.3-1 s of matmuls, then the weights unchanged
    for _ in range(24):
      m = jnp.tanh(m @ m)
    return jax.tree.map(lambda a: a + 0 * m[0, 0], w)

  m = jnp.full((1024, 1024), 1e-3)
  jax.block_until_ready(slow_copy(weights, m))  # compiled: the next call only dispatches
  start = time.perf_counter()
  pending = slow_copy(weights, m)
  dispatched = time.perf_counter() - start
  out = s.generate(pending, PROMPTS, jax.random.key(0))
  assert out.stats["wait_params_s"] > max(5 * dispatched, 0.05)
  assert out.stats["prefill_s"] < out.stats["wait_params_s"]


def test_streams_split_the_rows_and_each_part_draws_with_its_own_key(tiny):
  """Two streams: each contiguous part is what one stream draws for its prompts with its key of
  `split(rng, 2)` (rows in order, counts summed); greedy gives one stream's tokens. The
  reference is the one-stream call, itself checked against a full recompute above."""
  config, weights = tiny
  buckets = sampling.Buckets(batch=(16, 32, 64), prompt=(8, 16))
  rng = np.random.default_rng(0)
  prompts = [[int(t) for t in rng.integers(1, config.vocab_size, rng.integers(1, 12))]
             for _ in range(33)]
  key = jax.random.key(7)
  for temperature in (1.0, 0.0):
    params = sampling.SamplingParams(max_new_tokens=5, temperature=temperature)
    two = sampling.Sampler(config, params, pad_id=0, buckets=buckets, streams=2)
    one = sampling.Sampler(config, params, pad_id=0, buckets=buckets, streams=1)
    assert two._stream_parts(33) == [(0, 16), (16, 33)] and two._stream_parts(31) == [(0, 31)]
    odd = sampling.Sampler(config, params, pad_id=0, streams=2,
                           buckets=sampling.Buckets(batch=(32, 40, 64), prompt=(8,)))
    assert odd._stream_parts(40) == [(0, 40)]  # halves of 20 would decode 64 rows, not 40
    assert odd._stream_parts(64) == [(0, 32), (32, 64)] and odd._stream_parts(65) == [(0, 65)]
    out = two.generate(weights, prompts, key)
    if temperature:
      parts = [one.generate(weights, prompts[a:z], k)
               for (a, z), k in zip([(0, 16), (16, 33)], jax.random.split(key, 2))]
    else:
      parts = [one.generate(weights, prompts, key)]
    for field in ("tokens", "lengths", "stopped"):
      np.testing.assert_array_equal(getattr(out, field),
                                    np.concatenate([getattr(p, field) for p in parts]), field)
    # Concurrent calls may split a matmul over the cores otherwise: the same to rounding.
    np.testing.assert_allclose(out.logprobs, np.concatenate([p.logprobs for p in parts]),
                               atol=1e-5)
    for count in ("prompt_tokens", "decode_tokens", "prompts"):
      assert out.stats[count] == sum(p.stats[count] for p in parts) == (
          33 * 5 if count == "decode_tokens" else 33 if count == "prompts" else
          sum(map(len, prompts)))


def test_streams_default_to_two_on_one_cpu_device_and_must_be_positive(tiny):
  config, _ = tiny
  params = sampling.SamplingParams(max_new_tokens=2)
  assert jax.default_backend() == "cpu"
  assert sampling.Sampler(config, params, pad_id=0).streams == 2
  with pytest.raises(ValueError, match="streams=0"):
    sampling.Sampler(config, params, pad_id=0, streams=0)
