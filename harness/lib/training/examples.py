"""Training examples: token ids, labels and where they came from.

Every trainer (LoRA in-process, full fine-tuning under FSDP2 or DeepSpeed) trains on the same
``Example`` objects, so batching, packing, replay and multi-task mixing are written once:

* a *conversation* is rendered with the model's own chat template and supervised on its assistant
  turns only (their content and end-of-turn token);
* general *text* (replay data such as WikiText-2) is cut into windows of at most ``max_length``
  tokens and supervised on every token, as in pre-training.

``kind`` says which data set an example belongs to (``domain`` for the suite's curated data, else
the name of a replay or multi-task source) and ``weight`` scales its tokens in the loss.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.errors import CheckError, DataError
from harness.types import Conversation

IGNORE = -100
"""Label of a token that is not supervised (the prompt, padding)."""

DOMAIN = "domain"


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    kind: str = DOMAIN
    weight: float = 1.0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def supervised(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def encode_conversation(
    tokenizer: Any, record: Conversation, max_length: int
) -> tuple[list[int], list[int], bool]:
    """Token ids and labels of one conversation; labels are ``IGNORE`` outside assistant turns.

    Returns ``(input_ids, labels, truncated)``.  The assistant spans are found by rendering the
    conversation prefix by prefix, so any chat template that renders that way works.
    """
    messages = [{"role": m.role, "content": m.content} for m in record.messages]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = (
            tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
            if index
            else ""
        )
        upto = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (full.startswith(upto) and upto.startswith(prefix)):
            raise CheckError("the chat template does not render conversations prefix by prefix")
        spans.append((len(prefix), len(upto)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = enc["input_ids"]
    labels = [
        tok if any(s <= begin < e for s, e in spans) else IGNORE
        for tok, (begin, _end) in zip(ids, enc["offset_mapping"])
    ]
    truncated = len(ids) > max_length
    return ids[:max_length], labels[:max_length], truncated


def encode_conversations(
    tokenizer: Any,
    records: Sequence[Conversation],
    max_length: int,
    kind: str = DOMAIN,
    weight: float = 1.0,
) -> tuple[list[Example], list[str]]:
    """Encode conversations; returns the examples and notes on what was cut or left out."""
    examples: list[Example] = []
    truncated = 0
    for record in records:
        ids, labels, cut = encode_conversation(tokenizer, record, max_length)
        truncated += cut
        if any(label != IGNORE for label in labels):
            examples.append(Example(ids, labels, kind, weight))
    notes = []
    if truncated:
        notes.append(f"{kind}: {truncated} examples truncated to {max_length} tokens")
    if len(examples) < len(records):
        notes.append(f"{kind}: {len(records) - len(examples)} examples had no assistant token left")
    return examples, notes


def encode_text(
    tokenizer: Any, text: str, max_length: int, kind: str, weight: float = 1.0, limit: int | None = None
) -> list[Example]:
    """Cut ``text`` into consecutive windows of ``max_length`` tokens, every token supervised.

    Each window starts with the model's prefix token (BOS, else EOS) so that it is scored like
    the start of a document.  ``limit`` keeps the first that many windows.
    """
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    width = max_length - 1
    windows = []
    for start in range(0, len(ids) - width + 1, width):
        chunk = [prefix, *ids[start : start + width]]
        windows.append(Example(chunk, [IGNORE, *chunk[1:]], kind, weight))
        if limit is not None and len(windows) >= limit:
            break
    return windows


def save_examples(path: Path, examples: Iterable[Example]) -> int:
    """Write examples as JSON lines (for trainers that run in other processes); returns the count."""
    count = 0
    with path.open("w", encoding="utf-8") as fh:
        for example in examples:
            fh.write(json.dumps(asdict(example), separators=(",", ":")) + "\n")
            count += 1
    return count


def load_examples(path: Path) -> list[Example]:
    examples = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            try:
                examples.append(Example(**json.loads(line)))
            except (ValueError, TypeError) as exc:
                raise DataError(f"{path}:{number}: not a training example: {exc}") from None
    return examples
