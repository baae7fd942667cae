"""Production request logs built from real data, as an OpenAI-compatible gateway would log them.

Customer-support traffic: multi-turn chats from the Bitext data set (the customer's message, the
agent's reply, then the customer asks which category the first message was about); the
reference answer is the record's category.  The replies are long, so part of this traffic
exceeds 256 prompt tokens, as real support chats do.  Open-domain traffic: the first human turn
of HH-RLHF conversations.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from harness.lib.data import data_dir

CATEGORIES = (
    "ACCOUNT, ORDER, REFUND, DELIVERY, INVOICE, FEEDBACK, PAYMENT, CONTACT, "
    "SHIPPING_ADDRESS, CANCELLATION_FEE, NEWSLETTER"
)
QUESTION = f"Which category was my first message about? Answer with one of: {CATEGORIES}."
SUPPORT_CSV = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
HH_JSONL = "hh_rlhf/helpful-base/test_chosen_sharegpt.jsonl"


def support_rows() -> list[dict[str, str]]:
    with (data_dir() / SUPPORT_CSV).open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def support_requests(n: int, seed: int, skip: int = 0) -> list[dict]:
    """``n`` logged chat-completions requests; ``skip`` leaves out the first rows of the same
    shuffle, so two calls with different ``skip`` never share a record."""
    rows = support_rows()
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    out = []
    for i in order[skip : skip + n]:
        row = rows[i]
        messages = [
            {"role": "user", "content": row["instruction"]},
            {"role": "assistant", "content": row["response"]},
            {"role": "user", "content": QUESTION},
        ]
        out.append({"model": "smollm2", "messages": messages, "temperature": 0, "max_tokens": 16,
                    "metadata": {"reference": row["category"]}})
    return out


def hh_requests(n: int) -> list[dict]:
    out = []
    with (data_dir() / HH_JSONL).open(encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            first = record["conversations"][0]["value"]
            out.append({"model": "smollm2", "messages": [{"role": "user", "content": first}]})
            if len(out) == n:
                break
    return out


def write_log(path: Path, requests: list[dict]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for body in requests:
            fh.write(json.dumps({"request": body}, ensure_ascii=False) + "\n")
    return path
