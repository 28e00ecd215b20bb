#!/usr/bin/env python3
"""Train issue 35's recipe with Python PEFT, the way a PEFT user would, and score the test split.

The recipe is read from a wick config (bench/parity-recipe.toml): LoRA r/alpha/dropout/targets,
AdamW (betas 0.9/0.999, eps 1e-8) at a constant lr with no warmup and no clipping, max_steps x
batch_size examples, prompts cut at max_seq_len tokens, and the loss (`label_words`:
cross-entropy over the label words' logits at the answer position; `vocab`: over the whole
vocabulary). The prompts are the token ids wick trains on: the model's chat template around the
config's template (no system turn when `prompt.system` is empty, so the template's default),
then the answer prefix; the shared prefix and the rest are tokenized apart, and a long prompt
keeps the prefix and the end of the rest (score.rs `fit`). Rows are right-padded with an
attention mask; the last real position is read.

    wick model export assets/SmolLM2-135M-Instruct.Q4_1.gguf checkpoints/bench-model
    wick data split bench/parity-recipe.toml checkpoints/parity/split
    .venv-peer/bin/python bench/peft_recipe.py --model-dir checkpoints/bench-model \
        --split-dir checkpoints/parity/split --seed 0 --out checkpoints/parity/peft-s0

Writes OUT/ (the adapter, PEFT's files), OUT/predictions.jsonl (one {"text", "gold",
"predicted", "probabilities"} per test row, as `wick eval` writes) and OUT/metrics.json.
What differs from wick by design is only what a PEFT user would do differently: the seeded
initialisation (PEFT's Kaiming-uniform A under torch.manual_seed) and the batch order (a seeded
shuffle, no length bucketing).
"""
import argparse
import json
import os
import random
import sys
import time
import tomllib
from pathlib import Path

SLOT = "\u0000TEXT\u0000"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--split-dir", required=True)
    ap.add_argument("--config", default="bench/parity-recipe.toml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, help="override train.max_steps")
    ap.add_argument("--limit", type=int, default=0, help="score only the first N test rows")
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    cfg = tomllib.loads(Path(args.config).read_text())
    p, lo, tr = cfg["prompt"], cfg["lora"], cfg["train"]
    labels = cfg["data"]["labels"]
    steps = args.steps or tr["max_steps"]
    batch, max_len, loss_kind = tr["batch_size"], tr["max_seq_len"], tr.get("loss", "vocab")
    for key, want in [("warmup_steps", 0), ("schedule", "constant"), ("max_grad_norm", 0.0), ("weight_decay", 0.0)]:
        if tr.get(key) != want:
            sys.exit(f"{args.config}: train.{key} must be {want!r} for this script (it is {tr.get(key)!r})")

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    label_ids = []
    for label in labels:
        ids = tok.encode(p["label_words"][label], add_special_tokens=False)
        if len(ids) != 1:
            sys.exit(f"label word {p['label_words'][label]!r} is not one token")
        label_ids.append(ids[0])

    messages = [] if not p.get("system") else [{"role": "system", "content": p["system"]}]
    messages.append({"role": "user", "content": p["template"].replace("{text}", SLOT)})
    whole = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + p["answer_prefix"]
    at = whole.index(SLOT)
    head, tail = whole[:at], whole[at:]
    trimmed = head.rstrip(" ")
    tail = head[len(trimmed) :] + tail
    prefix_ids = tok.encode(trimmed, add_special_tokens=False)

    def prompt_ids(text):
        rest = tok.encode(tail.replace(SLOT, text), add_special_tokens=False)
        if len(prefix_ids) + len(rest) > max_len:
            keep = max(max_len - len(prefix_ids), 1)
            rest = rest[len(rest) - keep :]
        return prefix_ids + rest

    def rows(name):
        text = Path(args.split_dir, f"{name}.jsonl").read_text()
        return [json.loads(line) for line in text.split("\n") if line.strip()]

    train, test = rows("train"), rows("test")
    if args.limit:
        test = test[: args.limit]
    gold_of = {label: i for i, label in enumerate(labels)}

    torch.manual_seed(args.seed)
    base = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=lo["r"],
        lora_alpha=lo["alpha"],
        lora_dropout=lo.get("dropout", 0.0),
        target_modules=lo["target_modules"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    model.print_trainable_parameters()
    decoder = model.get_base_model().model
    lm_head = model.get_base_model().lm_head
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def answer_logits(texts):
        ids = [prompt_ids(t) for t in texts]
        width = max(map(len, ids))
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in ids])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])
        hidden = decoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        last = hidden[torch.arange(len(ids)), torch.tensor([len(r) - 1 for r in ids])]
        return lm_head(last).float()

    opt = torch.optim.AdamW(
        [q for q in model.parameters() if q.requires_grad], lr=tr["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    )
    rng = random.Random(args.seed)
    order = list(range(len(train)))
    rng.shuffle(order)
    model.train()
    t0 = time.time()
    for step in range(steps):
        chunk = [train[order[(step * batch + i) % len(order)]] for i in range(batch)]
        logits = answer_logits([r["text"] for r in chunk])
        gold = torch.tensor([gold_of[r["label"]] for r in chunk])
        if loss_kind == "label_words":
            loss = torch.nn.functional.cross_entropy(logits[:, label_ids], gold)
        else:
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor(label_ids)[gold])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 20 == 0:
            print(f"step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    train_seconds = time.time() - t0
    out = Path(args.out)
    model.save_pretrained(out)
    model.eval()
    lines, correct = [], 0
    with torch.no_grad():
        for i in range(0, len(test), 32):
            chunk = test[i : i + 32]
            logits = answer_logits([r["text"] for r in chunk])
            logprobs = torch.log_softmax(logits, -1)[:, label_ids]
            for r, lp in zip(chunk, logprobs.tolist()):
                predicted = labels[max(range(len(labels)), key=lambda j: lp[j])]
                correct += predicted == r["label"]
                probs = {label: float(torch.tensor(v).exp()) for label, v in zip(labels, lp)}
                lines.append({"text": r["text"], "gold": r["label"], "predicted": predicted, "probabilities": probs})
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    metrics = {
        "seed": args.seed,
        "steps": steps,
        "test_examples": len(lines),
        "accuracy": correct / len(lines),
        "train_seconds": train_seconds,
        "versions": {"torch": torch.__version__, "peft": __import__("peft").__version__},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
