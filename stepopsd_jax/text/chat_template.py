"""Chat templates rendered exactly as `transformers` renders them, without importing it.

Mirrors `transformers.utils.chat_template_utils` (`_compile_jinja_template`,
`render_jinja_template`) and the input clean-up of `apply_chat_template`, so a prompt built here
tokenizes to the ids the HF tokenizer gives. Needs only jinja2: the runtime package never imports
torch or transformers.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox
import jinja2.utils

# Qwen2.5-Instruct's template, verbatim: the default ChatML template for tokenizers that ship none.
QWEN2P5_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# Names a message's reasoning may come under: Qwen3 templates read `reasoning_content`, gpt-oss
# reads `thinking`.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
# transformers `apply_chat_template` options not implemented here: refused, not passed on silently.
UNSUPPORTED_OPTIONS = (
    "continue_final_message", "return_assistant_tokens_mask", "sanitize_control_tokens")


class _GenerationTag(jinja2.ext.Extension):
  """Accepts `{% generation %}...{% endgeneration %}` (assistant-mask markers); renders the body."""

  tags = {"generation"}

  def parse(self, parser):
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    call = jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body)
    return call.set_lineno(lineno)

  def _render_body(self, caller):
    return caller()


class _TemplateDict:
  """`dict(...)` for templates without exposing the `dict` type itself (as transformers does)."""

  def __call__(self, *args, **kwargs):
    return dict(*args, **kwargs)

  def fromkeys(self, *args, **kwargs):
    return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
  """`namespace(...)` refusing underscore attributes: templates cannot reach CPython internals."""

  def __init__(*args, **kwargs):  # pylint: disable=no-method-argument
    self, args = args[0], args[1:]  # Jinja's own signature trick: `namespace(self=...)` still works
    attrs = dict(*args, **kwargs)
    for name in attrs:
      _TemplateNamespace._check_name(name)
    jinja2.utils.Namespace.__init__(self, attrs)

  def __setitem__(self, name, value):
    _TemplateNamespace._check_name(name)
    jinja2.utils.Namespace.__setitem__(self, name, value)

  @staticmethod
  def _check_name(name):
    if isinstance(name, str) and name.startswith("_"):
      raise jinja2.exceptions.SecurityError(
          f"Chat templates cannot set underscore attributes on a namespace, got {name!r}.")


def _raise_exception(message):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  # Unlike Jinja's built-in `tojson`: no HTML escaping of <>&', key order kept, non-ASCII kept.
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


def _strftime_now(format):  # pylint: disable=redefined-builtin
  return datetime.datetime.now().strftime(format)


@functools.lru_cache(maxsize=32)
def compile_chat_template(template: str) -> jinja2.Template:
  """Compiles `template` once, in the sandboxed environment transformers uses."""
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True,
      extensions=[_GenerationTag, jinja2.ext.loopcontrols])
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = _strftime_now
  env.globals["dict"] = _TemplateDict()
  env.globals["namespace"] = _TemplateNamespace
  return env.from_string(template)


def _plain(value: Any) -> Any:
  """Rebuilds `value` from plain JSON-like types; anything else becomes a "<TypeName>" string.

  Templates are untrusted code: rich objects (arrays, images) carry methods the sandbox does not
  know to block, so transformers does the same.
  """
  if value is None or type(value) in (str, int, float, bool):
    return value
  # Subclasses (enums, numpy floats) drop back to the base type; `str(StrEnum)` would give "R.X".
  for base in (str, int, float):
    if isinstance(value, base):
      return getattr(base, f"__{base.__name__}__")(value)
  if isinstance(value, Mapping):
    return {_plain(k): _plain(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_plain(v) for v in value]
  if isinstance(value, tuple):
    return tuple(_plain(v) for v in value)
  if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy (and jax) scalars
    return _plain(value.item())
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
  return f"<{type(value).__name__}>"


def _normalize_message(message: Any) -> dict[str, Any]:
  """Drops None values (OpenAI-style `content=None`), aliases reasoning fields: as transformers."""
  message = _plain(message)
  if not isinstance(message, dict):
    raise TypeError(f"Chat messages should be dicts or dataclasses, got {message!r}.")
  message = {k: v for k, v in message.items() if v is not None}
  reasoning = next((message[k] for k in _REASONING_FIELDS if k in message), None)
  if reasoning is not None:
    message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
  return message


def _check_list_of_dicts(name: str, items: Sequence[Any] | None) -> None:
  for item in items or ():
    if not isinstance(item, Mapping):
      raise TypeError(f"{name} must be a list of dicts (JSON schemas), got an item {item!r}.")


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = False,
    tools: Sequence[Mapping[str, Any]] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    special_tokens: Mapping[str, str] | None = None,
    **template_vars: Any,
) -> str:
  """Renders one conversation; `special_tokens` (bos_token, eos_token, ...) are template variables.

  `template_vars` (e.g. `enable_thinking=False`) override special tokens of the same name, as in
  transformers.
  """
  unsupported = sorted(set(template_vars) & set(UNSUPPORTED_OPTIONS))
  if unsupported:
    raise ValueError(f"{unsupported}: transformers options this renderer does not implement.")
  if not messages:
    raise ValueError("Cannot apply a chat template to an empty conversation.")
  _check_list_of_dicts("tools", tools)
  _check_list_of_dicts("documents", documents)
  variables = _plain({**(special_tokens or {}), **template_vars})
  return compile_chat_template(template).render(
      messages=[_normalize_message(m) for m in messages],
      tools=_plain(list(tools)) if tools is not None else None,
      documents=_plain(list(documents)) if documents is not None else None,
      add_generation_prompt=add_generation_prompt,
      **variables,
  )
