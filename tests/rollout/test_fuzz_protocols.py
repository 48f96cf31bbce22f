"""Bad model output at scale: 10,000 fuzzed responses per env protocol through parse -> env ->
StepBatch (credit lab, Search-QA on generated data, ALFWorld on generated games with the fast
engine) never raise, and every malformed one is counted under its reason.

The responses come from `ScriptedSampler` (no model). Each is drawn from a category. Most are
built so that their reason is known by construction: tag-free text is `no_tags`; an opened tag
never closed, or a closing tag before its opening one, `unclosed`; whitespace between the tags
`empty`; content past the parser's limit `overlong`; a span followed by half of a 3-byte UTF-8
character `bad_utf8`; two spans of different kinds `both_tags` (Search-QA) ... The others (random
token ids, random code points, tag soup, text far past `max_new_tokens`) have no reason known in
advance; for those the expected reason is the protocol's parser applied, outside the loop, to the
text their kept ids decode to. The loop's `invalid/<reason>` counts must equal the sums.
"""

import collections
import dataclasses

import jax
import numpy as np

from stepopsd_jax import envs, sampling
from stepopsd_jax.rollout import RolloutConfig, collect, prompts, protocol
from stepopsd_jax.rollout.random_policy import train_env_tokenizer
from tests.envs.alfworld.conftest import needs_alfworld
from tests.rollout.conftest import ENV as CREDIT_LAB
from tests.rollout.conftest import ScriptedSampler

N = 10_000
MAX_NEW_TOKENS = 320
WORDS = ["go", "to", "red", "door", "open", "take", "apple", "1", "the", "answer", "Paris", "who"]
ODD = ["é", "日本", "🙂", "\t", "\n", "  ", "x" * 40, "&lt;", ">", "/>", "\\", "\"", "{}"]
SOUP = ["<think>", "</think>", "<information>", "</information>", "<act", "ion>", "</", ">",
        "<action", "<>", "<<", "\n", " ", "open", "door", "\ufffd"]
UNKNOWN = None  # the reason of a category with no reason known in advance
KNOWN = ("no_tags", "unclosed", "wrong_order", "empty", "overlong", "well_formed", "two_kinds",
         "repeated", "half_char")
RANDOM = ("random_ids", "code_points", "tag_soup", "huge")


@dataclasses.dataclass(frozen=True)
class Protocol:
  env: str
  tags: tuple  # (open, close) of every action kind
  content_limit: int  # the parser's limit on an action's characters
  two_kinds: str = "ok"  # reason of one span of each kind ("ok": one kind, the first span wins)
  repeated: str = "ok"  # reason of the same span twice


class Fuzz:
  """Draws responses (as `ScriptedSampler.respond`), tallying categories and expected reasons."""

  def __init__(self, proto: Protocol, tokenizer, vocab_size: int, seed: int = 0):
    self.proto, self.tok, self.vocab_size = proto, tokenizer, vocab_size
    self.rng = np.random.default_rng(seed)
    self.parse = protocol.for_env(proto.env).parse_response
    self.drawn, self.expected = collections.Counter(), collections.Counter()
    self.count = 0
    self.half_char = [tokenizer.token_to_id(f"<0x{b:02X}>") for b in (0xE2, 0x82)]  # of "€"
    assert None not in self.half_char, "the tokenizer needs byte-fallback pieces"
    self.filler = min(("the ", "go ", "door ", "a "), key=lambda w: len(tokenizer.encode(w * 50)))

  def respond(self, prompt_text, row_rng):
    del prompt_text, row_rng
    category = (KNOWN + RANDOM)[int(self.rng.integers(len(KNOWN + RANDOM)))]
    made, reason = getattr(self, f"_{category}")()
    ids = self.tok.encode(made) if isinstance(made, str) else [int(i) for i in made]
    if reason is not UNKNOWN:
      assert len(ids) <= MAX_NEW_TOKENS, category  # nothing cut: the reason stands
    ids = ids[:MAX_NEW_TOKENS]  # what the sampler keeps
    if reason is UNKNOWN:
      reason = self.parse(self.tok.decode([i for i in ids if 0 <= i < self.tok.vocab_size])).reason
    self.drawn[category] += 1
    self.expected[reason] += 1
    self.count += 1
    return ids

  def _tags(self):
    k = int(self.rng.integers(len(self.proto.tags)))
    return self.proto.tags[k], self.proto.tags[(k + 1) % len(self.proto.tags)]

  def _w(self, n=3):
    return " ".join(WORDS[int(i)] for i in self.rng.integers(len(WORDS), size=n))

  def _no_tags(self):
    odd = [ODD[int(i)] for i in self.rng.integers(len(ODD), size=int(self.rng.integers(8)))]
    return f"{self._w(int(self.rng.integers(1, 30)))} {' '.join(odd)}", "no_tags"

  def _unclosed(self):
    (o, _), _ = self._tags()
    return f"<think>{self._w()}</think>{o}{self._w()}", "unclosed"

  def _wrong_order(self):
    (o, c), _ = self._tags()
    return f"{self._w()}{c}{self._w()}{o}{self._w()}", "unclosed"

  def _empty(self):
    (o, c), _ = self._tags()
    return f"<think>{self._w()}</think>{o} \n {c}", "empty"

  def _overlong(self):
    (o, c), _ = self._tags()
    return f"{o}{self.filler * (self.proto.content_limit // len(self.filler) + 2)}{c}", "overlong"

  def _well_formed(self):
    (o, c), _ = self._tags()
    return f"<think>{self._w()}</think>{o}{self._w(2)}{c}", "ok"

  def _two_kinds(self):
    (o, c), (o2, c2) = self._tags()
    return f"{o}{self._w()}{c}{o2}{self._w()}{c2}", self.proto.two_kinds

  def _repeated(self):
    (o, c), _ = self._tags()
    return f"{o}{self._w()}{c} {o}{self._w()}{c}", self.proto.repeated

  def _half_char(self):
    (o, c), _ = self._tags()
    return self.tok.encode(f"{o}{self._w()}{c}") + self.half_char, "bad_utf8"

  def _random_ids(self):
    return self.rng.integers(0, self.vocab_size, int(self.rng.integers(0, MAX_NEW_TOKENS))), UNKNOWN

  def _code_points(self):
    points = self.rng.integers(1, 0x2FFFF, int(self.rng.integers(0, 120)))
    return "".join(chr(int(x)) for x in points if not 0xD800 <= x < 0xE000), UNKNOWN

  def _tag_soup(self):
    pool = SOUP + [t for pair in self.proto.tags for t in pair]
    return "".join(pool[int(i)] for i in self.rng.integers(len(pool), size=40)), UNKNOWN

  def _huge(self):  # ~3000 words: the sampler keeps the first MAX_NEW_TOKENS tokens
    (o, c), _ = self._tags()
    return f"<think>{self._w(3000)}</think>{o}{self._w()}{c}", UNKNOWN


def _fuzz(proto: Protocol, tokenizer, tasks, group_size, max_steps=None):
  """Collects batches of episodes until N responses were drawn; returns (fuzz, summed metrics)."""
  vocab_size = tokenizer.vocab_size + 64  # a model vocab padded past the tokenizer's
  fuzz = Fuzz(proto, tokenizer, vocab_size)
  sampler = ScriptedSampler(tokenizer, fuzz.respond, max_new_tokens=MAX_NEW_TOKENS,
                            vocab_size=vocab_size)
  sampler.buckets = sampling.Buckets(batch=(64, 512, 4096, 5120), prompt=(256, 512, 1024, 2048))
  cfg = RolloutConfig(group_size=group_size, max_steps=max_steps)
  totals, k = collections.Counter(), 0
  while fuzz.count < N:
    result = collect(sampler, None, tokenizer, proto.env, tasks, jax.random.key(k), cfg,
                     env_seed=k)
    b = result.batch
    assert b.num_rows == result.metrics["num_steps"]
    assert (b.control_mask <= b.response_mask).all() and not b.response_mask[~b.row_valid].any()
    totals.update({key: v for key, v in result.metrics.items()
                   if key.startswith("invalid") or key in ("num_steps", "env_errors")})
    k += 1
  return fuzz, totals


def _check(fuzz: Fuzz, totals) -> dict:
  """Every response stepped, no env error, and the loop's counts per reason as expected."""
  assert fuzz.count >= N and totals["num_steps"] == fuzz.count
  assert totals["env_errors"] == 0  # the envs took every parsed action without raising
  counted = {key.removeprefix("invalid/"): v for key, v in totals.items()
             if key.startswith("invalid/")}
  expected = {r: n for r, n in fuzz.expected.items() if r != "ok"}
  assert counted == expected
  assert totals["invalid_actions"] == sum(expected.values())
  assert set(fuzz.drawn) == set(KNOWN + RANDOM) and min(fuzz.drawn.values()) > N // 30
  for reason, category in (("no_tags", "no_tags"), ("empty", "empty"), ("overlong", "overlong"),
                           ("bad_utf8", "half_char")):
    assert counted[reason] >= fuzz.drawn[category]
  assert counted["unclosed"] >= fuzz.drawn["unclosed"] + fuzz.drawn["wrong_order"]
  return counted


def test_credit_lab_protocol(tokenizer):  # the credit-lab tokenizer of tests/rollout/conftest.py
  proto = Protocol(CREDIT_LAB, (("<action>", "</action>"),), content_limit=200)
  tasks = envs.make_tasks(CREDIT_LAB, "train", 200, seed=0)
  _check(*_fuzz(proto, tokenizer, tasks, group_size=4))


def test_search_qa_protocol(tmp_path_factory):
  from stepopsd_jax.envs.search_qa import generate  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("search_qa_fuzz")
  paths = generate.generate(str(root / "data"), num_people=60, num_train=60, num_test=30, seed=3)
  tasks = envs.make_tasks("search_qa", "train", -1, train_files=paths["train"],
                          corpus=paths["corpus"], retriever="bm25", index_dir=str(root / "index"))
  tokenizer = train_env_tokenizer("search_qa", tasks, prompts.PromptConfig(), vocab_size=800)
  proto = Protocol("search_qa", (("<search>", "</search>"), ("<answer>", "</answer>")),
                   content_limit=1000, two_kinds="both_tags", repeated="repeated_tags")
  counted = _check(*_fuzz(proto, tokenizer, tasks * 4, group_size=4))
  assert counted["both_tags"] >= 1 and counted["repeated_tags"] >= 1


@needs_alfworld
def test_alfworld_protocol(tmp_path_factory):
  # pylint: disable-next=import-outside-toplevel (importing alfworld creates $ALFWORLD_DATA)
  from stepopsd_jax.envs.alfworld import generate, make_tasks
  root = tmp_path_factory.mktemp("alfworld_fuzz")
  generate.generate(root, "valid_unseen", per_type=1, seed=3,
                    task_types=("pick_and_place_simple", "look_at_obj_in_light"))
  tasks = make_tasks("valid_unseen", -1, data_dir=str(root), max_steps=50, fast=True)
  tokenizer = train_env_tokenizer("alfworld", tasks, prompts.PromptConfig(), vocab_size=600)
  proto = Protocol("alfworld", (("<action>", "</action>"),), content_limit=200)
  # Long episodes: a new env costs ~20 engine steps (load, reset); a step ~4 ms, so this test
  # is bound by the engine's 10,000 steps.
  _check(*_fuzz(proto, tokenizer, tasks * 10, group_size=5))


def test_the_construction_rules_on_hand_written_examples():
  """The rules the categories are built on, on the two parsers (one example each)."""
  search = protocol.for_env("search_qa").parse_response
  default = protocol.for_env(CREDIT_LAB).parse_response
  assert search("</search>x<search>").reason == default("</action>x<action>").reason == "unclosed"
  assert search("<answer>a").reason == default("<action>a").reason == "unclosed"
  assert search("<search> \n </search>").reason == default("<action> </action>").reason == "empty"
  assert search("<answer>a</answer><search>b</search>").reason == "both_tags"
  assert search("<search>a</search> <search>b</search>").reason == "repeated_tags"
  assert default("<action>a</action><action>b</action>").action == "a"
  assert search("<search>a</search>\ufffd").reason == default("\ufffd").reason == "bad_utf8"
  assert search("x" * 3).reason == default("x").reason == "no_tags"
