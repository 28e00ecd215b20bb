#!/usr/bin/env python3
"""Train a LoRA adapter with Python PEFT on wick's split and prompt, save it the PEFT way, and
score the test split, so `wick eval --checkpoint OUT --config CONFIG` can be checked against it.

    wick model export assets/SmolLM2-135M-Instruct.Q4_1.gguf checkpoints/bench-model
    wick data split configs/rotten-tomatoes.toml checkpoints/split
    .venv-peer/bin/python bench/peft_adapter.py --model-dir checkpoints/bench-model \
        --split-dir checkpoints/split --out checkpoints/peft-adapter --steps 150

The prompt is the config's system message and main template rendered with the model's chat
template (add_generation_prompt) plus the answer prefix; the label is the label word's next-token
log-probability (wick's verbalizer, loss over the whole vocabulary). The adapter deliberately
uses PEFT features wick must honour: a rank_pattern, an alpha_pattern and a list of targets.
Writes OUT/ (adapter_config.json, adapter_model.safetensors, README.md) and
OUT/peft_test_predictions.jsonl (one {"text", "label", "predicted"} per test row).
"""
import argparse
import json
import os
import random
import sys
import time
import tomllib
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--split-dir", required=True)
    ap.add_argument("--config", default="configs/rotten-tomatoes.toml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = tomllib.loads(Path(args.config).read_text())
    prompt_cfg = cfg.get("prompt", {})
    system = prompt_cfg.get("system", "You are a helpful assistant that classifies the sentiment of movie reviews.")
    template = prompt_cfg.get(
        "template", "Is the sentiment of this review positive or negative?\nReview: {text}\nAnswer with one word."
    )
    answer_prefix = prompt_cfg.get("answer_prefix", "Sentiment:")
    labels = cfg["data"]["labels"]
    words = prompt_cfg.get("label_words", {"negative": " negative", "positive": " positive"})

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    label_ids = []
    for label in labels:
        ids = tok.encode(words[label], add_special_tokens=False)
        assert len(ids) == 1, f"label word {words[label]!r} is not one token"
        label_ids.append(ids[0])

    def prompt(text):
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": template.replace("{text}", text)}]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + answer_prefix

    def rows(name):
        return [json.loads(line) for line in Path(args.split_dir, f"{name}.jsonl").read_text().split("\n") if line.strip()]

    train, test = rows("train"), rows("test")
    base = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.05,
        target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
        rank_pattern={"down_proj": 4},
        alpha_pattern={"o_proj": 32},
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    model.print_trainable_parameters()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    gold_of = {label: i for i, label in enumerate(labels)}

    def next_token_logits(texts):
        enc = tok([prompt(t) for t in texts], return_tensors="pt", padding=True, add_special_tokens=False)
        # Only the last position's logits: the full (batch, seq, vocab) tensor is gigabytes.
        out = model(**enc, logits_to_keep=1)
        return out.logits[:, -1, :]

    rng = random.Random(args.seed)
    order = list(range(len(train)))
    rng.shuffle(order)
    model.train()
    t0 = time.time()
    for step in range(args.steps):
        batch = [train[order[(step * args.batch + i) % len(order)]] for i in range(args.batch)]
        logits = next_token_logits([r["text"] for r in batch])
        target = torch.tensor([label_ids[gold_of[r["label"]]] for r in batch])
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 10 == 0:
            print(f"step {step + 1}/{args.steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    model.save_pretrained(args.out)
    model.eval()
    out_rows = []
    with torch.no_grad():
        for i in range(0, len(test), 32):
            chunk = test[i : i + 32]
            logits = next_token_logits([r["text"] for r in chunk])[:, label_ids]
            for r, row in zip(chunk, logits.argmax(-1).tolist()):
                out_rows.append({"text": r["text"], "label": r["label"], "predicted": labels[row]})
    correct = sum(r["label"] == r["predicted"] for r in out_rows)
    with open(Path(args.out, "peft_test_predictions.jsonl"), "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in out_rows)
    print(json.dumps({"test_examples": len(out_rows), "peft_test_accuracy": correct / len(out_rows), "train_seconds": time.time() - t0}))


if __name__ == "__main__":
    main()
