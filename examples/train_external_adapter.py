"""Train a small LoRA adapter the way a team outside the harness would: plain transformers + peft.

The adapter this writes is what ``suites/deployed_vs_candidate.yaml`` gates as its candidate (an
``adapter:`` arm) against the base model served by vLLM (the "deployed" model).  It learns the
Bitext customer-support intent labels on the training side of the split that the
``support_intent`` benchmark holds out (so the gate never scores an item the adapter saw), with the
benchmark's own prompt, for a few steps on CPU.

    python examples/train_external_adapter.py --out suites/adapters/support-lora

Its ``adapter_config.json`` names the base model by its hub id,
``HuggingFaceTB/SmolLM2-135M-Instruct``, as an adapter trained with Axolotl, TRL or LLaMA-Factory
would; the harness checks it against the suite's ``model`` before anything runs.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DATA = "bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
SOURCE = "${data}/" + DATA  # the support_intent benchmark's split key
PROMPT = "Classify the intent of this customer message. Answer with the intent label only.\n\nMessage: {instruction}"


def training_rows(limit: int, seed: int) -> list[dict[str, str]]:
    """Rows outside the benchmark's held-out split (10%, split seed 0), shuffled, at most ``limit``."""
    from harness.lib.data import csv_rows, data_dir, in_split

    with (data_dir() / DATA).open(encoding="utf-8-sig", newline="") as fh:
        rows = csv_rows(fh)
        header = next(rows)[1]
        kept = [dict(zip(header, values)) for line, values in rows if not in_split(f"{SOURCE}:{line}", "holdout", 0.1, 0)]
    random.Random(seed).shuffle(kept)
    return kept[:limit]


def encode(tokenizer: Any, row: dict[str, str], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of the chat (user prompt, assistant label) and labels masking the prompt."""
    user = [{"role": "user", "content": PROMPT.replace("{instruction}", row["instruction"])}]
    prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full = prompt + row["intent"] + tokenizer.eos_token + "\n"
    ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return ids, [-100] * min(n_prompt, len(ids)) + ids[n_prompt:]


def batches(tokenizer: Any, rows: list[dict[str, str]], size: int, max_length: int) -> list[dict[str, Any]]:
    import torch

    out = []
    for start in range(0, len(rows) - size + 1, size):
        encoded = [encode(tokenizer, row, max_length) for row in rows[start : start + size]]
        width = max(len(ids) for ids, _ in encoded)
        pad = tokenizer.pad_token_id
        out.append({
            "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in encoded]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in encoded]),
            "labels": torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in encoded]),
        })  # fmt: skip
    return out


def train(base: Path, out: Path, steps: int, batch_size: int, lr: float, seed: int) -> Path:
    """LoRA (rank 8 on the attention projections) for ``steps`` steps; the adapter folder."""
    import peft
    import torch
    import transformers

    torch.manual_seed(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    data = batches(tokenizer, training_rows(steps * batch_size, seed), batch_size, 128)
    for step, batch in enumerate(data, 1):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step}/{len(data)}: loss {loss.item():.3f}", flush=True)
    model.save_pretrained(str(out))
    meta_path = out / "adapter_config.json"
    meta = json.loads(meta_path.read_text())
    meta["base_model_name_or_path"] = HUB_ID  # the portable name, as other trainers record it
    meta_path.write_text(json.dumps(meta, indent=2))
    return out


def embedded_base() -> Path:
    """The embedded SmolLM2-135M-Instruct as a transformers folder (converted once from its GGUF)."""
    from harness.lib.models import EMBEDDED, materialize_embedded

    return materialize_embedded(EMBEDDED["smollm2-135m-instruct"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("suites/adapters/support-lora"), help="the adapter folder to write")
    parser.add_argument("--base", type=Path, default=None, help="a local SmolLM2-135M-Instruct folder (default: the embedded one)")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = train(args.base or embedded_base(), args.out, args.steps, args.batch_size, args.lr, args.seed)
    print(f"adapter written to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
