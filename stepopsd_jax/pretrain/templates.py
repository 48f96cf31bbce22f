"""The wordings of the reading corpus: many small templates per slot, none taken from an env.

Every slot (system prompt, task line, step marker, option list, plan block, numbering, question,
think text) has several wordings so that what the model learns is the structure (a numbered
list, the current step's number, a question naming a key) and not one sentence. Two wordings
are the rollout's generic agent format, shared by every env that keeps the default protocol:
the step marker `[Step k] Observation:` (`rollout.prompts.step_text`), the label
`Admissible actions:`, the format instruction `rollout.prompts.FORMAT_INSTRUCTION` and the warm-up's
think text. They carry no env's decision. Nothing here is a credit-lab, ALFWorld or Search-QA
sentence, and no plan wording is the hindsight block's (`EXCLUDED` in `corpus.py` is tested).

Item slots ({item}, {key}) are always preceded by a space: a byte-level BPE word piece " zib"
is then the same token wherever the item appears (list, options, plan); only the answer's first
word follows "<action>" without a space, which is why items start with a verb that is one token
in both forms (`vocab.py`).
"""

from __future__ import annotations

# The rollout's format instruction (rollout/prompts.py FORMAT_INSTRUCTION) and warm-up think
# text (rollout/protocol.py RESPONSE_TEMPLATE), restated so the corpus is fixed by this file.
FORMAT_INSTRUCTION = ("Think briefly inside <think> </think>, then give exactly one admissible "
                      "action inside <action> </action>.")
WARMUP_THINK = "I pick one of the admissible actions."

SYSTEM_PROMPTS = ("You are an agent.", "You are a helpful assistant.", "You follow instructions.",
                  "You are a careful reader.", "You answer briefly.", None)  # None: template's

INSTRUCTIONS = (FORMAT_INSTRUCTION,
                "Reason inside <think> </think> and answer inside <action> </action>.",
                "Reply as <think> ... </think> followed by <action> ... </action>.",
                "Write a short thought in <think> </think>, then the answer in <action> </action>.",
                None)

THINKS = (WARMUP_THINK, "I follow the list.", "Let me read the context.", "I choose one.",
          "The answer is in the text.", "I check the options.", "Ok.", "")

TASK_LINES = ("Goal: {words}.", "Your job: {words}.", "Mission: {words}.", "Task: {words}.",
              "Objective: {words}. It takes {n} steps.", "Play {n} turns: {words}.")

# The current step's marker and the observation after it; {k} is 1-based.
STEP_MARKERS = ("[Step {k}] Observation: {obs}", "Step {k}. You see: {obs}", "Turn {k}: {obs}",
                "(round {k}) {obs}", "Now at stage {k}. {obs}", "Move {k} of {n}. {obs}",
                "[Turn {k}] State: {obs}", "This is step {k}. {obs}")

HISTORY_LINES = ("Earlier, at step {j}, you did: {item}.", "Turn {j} action: {item}.",
                 "(round {j}) you chose: {item}.")

OPTION_LABELS = ("Admissible actions:", "Options:", "Choices:", "You can:", "Available moves:",
                 "Possible actions:")
OPTION_SEPARATORS = (", ", ", ", " | ", " / ", "; ")

# Optional first line of a plan block: an outcome that says nothing about which item is right.
OUTCOME_LINES = ("Last run: {verdict} (score {score}).", "[Note] A previous try {verdict}.",
                 "Feedback: {verdict}, score {score}.", "Earlier run {verdict} with {score} points.")
VERDICTS = ("good", "bad", "worked", "did not work", "positive", "negative")

PLAN_INTROS = ("Plan: {items}", "Follow these steps: {items}", "Suggested moves: {items}",
               "A guide lists the moves in order: {items}",
               "Notes from a finished run, move by move: {items}", "Recommended sequence: {items}",
               "Hint, one action per step: {items}", "[Guide] {items}",
               "Someone solved it like this: {items}", "The steps to take: {items}")

# How entry i (1-based) of a numbered list is written, and what joins the entries. Every number
# follows a space (" 2" is one token; "2" after "(", "#" or a newline is another), in lists as in
# step markers and questions, so matching a step to its entry needs no second spelling.
NUMBERINGS = ("{i}. {item}", "{i}) {item}", "step {i}: {item}", "{i}: {item}", "{i} - {item}",
              "turn {i} -> {item}", "no. {i} {item}")
LIST_SEPARATORS = ("; ", ", ", " | ", " / ", " ;\n")

LIST_INTROS = ("Here is a list: {items}", "List: {items}", "Entries: {items}",
               "The following are numbered: {items}", "Records in order: {items}")
INDEX_QUESTIONS = ("Which entry is number {k}?", "Give item {k} of the list.",
                   "Answer with entry {k}.", "What is listed at position {k}?",
                   "Copy entry {k}.")

# Key -> value records (lookup) and the question that names one key.
RECORDS = ("the {key} holds {item}", "key {key} = {item}", "box {key} contains {item}",
           "under {key} you find {item}", "the {key} is paired with {item}")
RECORD_INTROS = ("Records: {records}.", "Facts: {records}.", "Memory: {records}.",
                 "You read: {records}.")
LOOKUP_QUESTIONS = ("What goes with {key}?", "Find the entry for {key}.",
                    "Which item belongs to {key}?", "Look up {key}.", "Name the match of {key}.")

ECHO_PROMPTS = ("Repeat this: {item}", "Copy the words: {item}", "Say exactly: {item}",
                "Echo back: {item}")

# Neutral words for task lines and observations (besides random items): never env words.
FILLER = ("the", "a", "near", "with", "and", "some", "every", "of", "on", "under", "it", "you",
          "see", "find", "reach", "keep", "quiet", "large", "small", "old", "new", "left", "right",
          "far", "close", "there", "here", "two", "one", "three")
