#!/usr/bin/env python3
"""Record the PyTorch + PEFT reference that tests/peft_train_parity.rs compares wick's training to.

On wick's tiny parity Llama (written by the Rust test's `dump_parity_model`, so both sides start
from the same bits), this script builds an initial LoRA adapter with PEFT (r 8, alpha 16, no
dropout, q/k/v/o/gate/up/down; A as PEFT initialises it, B seeded non-zero so both factors get a
gradient from the first step) and saves it with `save_pretrained`. Then, for each fixed batch, it
loads that adapter with `PeftModel.from_pretrained(..., is_trainable=True)` and runs a few steps
of plain PyTorch: the last real position's logits, cross-entropy over the label words' logits
(wick's `train.loss = "label_words"`) or over the whole vocabulary (`"vocab"`), batch mean,
backward, `torch.optim.AdamW` (betas 0.9/0.999, eps 1e-8, no weight decay, constant lr, no
warmup, no clipping). Rows are right-padded with an attention mask, as wick pads.

It writes into --out (tests/fixtures/parity):
  initial/adapter_config.json, initial/adapter_model.safetensors  the starting adapter (PEFT's files)
  final.safetensors   every batch's adapter after the last step, keys "<batch>/<PEFT key>"
  reference.json      token ids, label ids, hyper-parameters, per-step losses and gradient norms,
                      versions, the model's fingerprint, and how far the same steps in f64 end from
                      the f32 ones (`torch_f32_vs_f64`: PyTorch's own rounding, against which the
                      test's tolerances are set; a batch where it is large is refused)

Run it from the venv scripts/setup-peer builds; without --model-dir it writes the model itself
with cargo (CARGO_TARGET_DIR as set, else ~/.cache/wick/target):

    .venv-peer/bin/python bench/parity_steps.py
    .venv-peer/bin/python bench/parity_steps.py --model-dir /tmp/parity-model   # written by:
    WICK_PARITY_DUMP=/tmp/parity-model cargo test --release --test peft_train_parity -- --ignored dump_parity_model
"""
import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
R, ALPHA = 8, 16.0
B_SCALE = 0.1  # the seeded lora_B values are uniform in [-B_SCALE, B_SCALE)
LABEL_IDS = [17, 101, 300]  # three one-token "label words" of the 512-token vocabulary
# (name, loss, shared prefix length, row lengths, gold labels): every row of a batch starts with
# the same `prefix` tokens; the rest of each row is its own.
BATCHES = [
    ("equal", "label_words", 0, [12, 12, 12, 12], [0, 1, 2, 1]),
    ("padded", "label_words", 0, [12, 5, 9, 7], [2, 0, 1, 0]),
    ("prefix", "label_words", 6, [12, 9, 11, 8], [1, 2, 0, 2]),
    ("vocab", "vocab", 0, [8, 11, 4, 10], [2, 1, 0, 0]),
]
# The reference is recorded only where PyTorch's own f32 rounding does not decide it: its f32 run
# must agree with its f64 run to a tenth of the Rust test's tolerances (WEIGHT_TOL and
# DISPLACEMENT_TOL, 1e-4 there). Adam divides each gradient by its own size, so an element whose
# first gradient is within rounding of zero takes a first step of ±lr either way, whoever computes
# it; the f32/f64 comparison finds such batches and this script then refuses them.
CONDITIONING_LIMIT = 1e-5


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", help="the tiny model folder (config.json, model.safetensors, fingerprint.txt); default: write one with cargo")
    p.add_argument("--out", default=str(ROOT / "tests/fixtures/parity"))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3, help="moves the adapters measurably in a few steps without saturating the loss")
    p.add_argument("--seed", type=int, default=0, help="torch seed of the initial adapter and token ids")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def log(*a):
    print("parity:", *a, file=sys.stderr, flush=True)


def dump_model(dest):
    """Have the Rust test write the tiny model into `dest`."""
    env = dict(os.environ, WICK_PARITY_DUMP=str(dest))
    env.setdefault("CARGO_TARGET_DIR", str(Path.home() / ".cache/wick/target"))
    cmd = ["cargo", "test", "--release", "--test", "peft_train_parity", "--", "--ignored", "--exact", "dump_parity_model"]
    log(" ".join(cmd), f"(WICK_PARITY_DUMP={dest})")
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def make_batches(seed, vocab):
    """Token ids of each batch: seeded, never the pad id 0, a shared prefix where asked."""
    rng = random.Random(seed)
    out = []
    for name, loss, prefix_len, lengths, gold in BATCHES:
        prefix = [rng.randrange(3, vocab) for _ in range(prefix_len)]
        rows = [prefix + [rng.randrange(3, vocab) for _ in range(n - prefix_len)] for n in lengths]
        out.append({"name": name, "loss": loss, "prefix_len": prefix_len, "rows": rows, "gold": gold})
    return out


def main():
    args = parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import peft
    import safetensors
    import torch
    import torch.nn.functional as F
    import transformers
    from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    tmp = None
    model_dir = Path(args.model_dir) if args.model_dir else None
    if model_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="wick-parity-")
        model_dir = Path(tmp.name) / "model"
        dump_model(model_dir)
    fingerprint, model_seed = (model_dir / "fingerprint.txt").read_text().split()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def base_model(dtype):
        # Eager attention: the plain softmax(QKᵀ/√d + mask)·V, no fused kernel choices.
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="eager")

    # The initial adapter: PEFT's own initialisation of A (kaiming-uniform from the torch seed),
    # B overwritten with seeded values (PEFT's zeros would leave A without a gradient at step 1).
    torch.manual_seed(args.seed)
    lora = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    init = get_peft_model(base_model(torch.float32), lora)
    gen = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for name, p in init.named_parameters():
            if "lora_B" in name:
                p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float32) * 2 - 1) * B_SCALE)
    init.peft_config["default"].base_model_name_or_path = "wick parity tiny Llama (tests/peft_train_parity.rs)"
    # PEFT keeps target_modules as a set (hash order): a sorted list writes the same file every time.
    init.peft_config["default"].target_modules = sorted(init.peft_config["default"].target_modules)
    initial = out / "initial"
    shutil.rmtree(initial, ignore_errors=True)
    init.save_pretrained(initial)
    (initial / "README.md").unlink(missing_ok=True)  # PEFT's model card: nothing the test reads
    vocab = init.get_base_model().config.vocab_size
    del init

    batches = make_batches(args.seed, vocab)
    label_ids = torch.tensor(LABEL_IDS)

    def train(batch, dtype):
        """Per-step losses and gradient norms, and the adapter after the last step."""
        model = PeftModel.from_pretrained(base_model(dtype), initial, is_trainable=True).to(dtype)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        assert len(params) == 2 * len(TARGETS) * model.get_base_model().config.num_hidden_layers, len(params)
        opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        rows = batch["rows"]
        lengths = torch.tensor([len(r) for r in rows])
        width = int(lengths.max())
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])  # right padding, pad id 0 as wick
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        gold = torch.tensor(batch["gold"])
        losses, norms, grads = [], [], None
        for step in range(args.steps):
            opt.zero_grad(set_to_none=True)
            logits = model(input_ids=ids, attention_mask=mask).logits
            last = logits[torch.arange(len(rows)), lengths - 1]  # the next-token logits after each prompt
            if batch["loss"] == "label_words":
                loss = F.cross_entropy(last[:, label_ids], gold)
            else:
                loss = F.cross_entropy(last, label_ids[gold])
            loss.backward()
            norms.append(float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params))))
            if step == 0:
                grads = torch.cat([p.grad.double().flatten() for p in params])
            opt.step()
            losses.append(float(loss))
        state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
        return losses, norms, state, grads

    start = {k: t.double() for k, t in load_file(str(initial / "adapter_model.safetensors")).items()}

    def norm(a, b):
        """The L2 norm of a − b over every adapter tensor."""
        return float(torch.sqrt(sum(((a[k].double() - b[k].double()) ** 2).sum() for k in b)))

    finals = {}
    for batch in batches:
        losses, norms, state, grads = train(batch, torch.float32)
        losses64, norms64, state64, grads64 = train(batch, torch.float64)
        max_w = max(float(t.abs().max()) for t in state64.values())
        batch.update(
            losses=losses,
            grad_norms=norms,
            torch_f32_vs_f64={
                "loss_rel": max(abs(a - b) / abs(b) for a, b in zip(losses, losses64)),
                "grad_norm_rel": max(abs(a - b) / abs(b) for a, b in zip(norms, norms64)),
                "weights_rel_to_max_w": max(float((state[k].double() - state64[k]).abs().max()) for k in state) / max_w,
                "displacement_rel": norm(state, state64) / norm(state64, start),
                # Step 1 runs both precisions from the same weights: pure rounding. Where the
                # smallest gradient is near this noise, Adam's first step there is a coin toss.
                "step1_grad_noise": float((grads - grads64).abs().max()),
                "step1_min_abs_grad": float(grads64.abs().min()),
            },
        )
        worst = max(batch["torch_f32_vs_f64"]["weights_rel_to_max_w"], batch["torch_f32_vs_f64"]["displacement_rel"])
        if worst > CONDITIONING_LIMIT:
            sys.exit(
                f"parity: batch {batch['name']!r}: PyTorch f32 and f64 end {worst:.2e} apart (> {CONDITIONING_LIMIT:e}): "
                "the batch is ill-conditioned for Adam at f32; change its rows or labels"
            )
        for k, t in state.items():
            finals[f"{batch['name']}/{k}"] = t.contiguous()
        log(f"{batch['name']}: losses {['%.6f' % l for l in losses]}, f32 vs f64 {batch['torch_f32_vs_f64']}")
    save_file(finals, str(out / "final.safetensors"))

    reference = {
        "about": "PyTorch + PEFT reference for tests/peft_train_parity.rs, recorded by bench/parity_steps.py",
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "safetensors": safetensors.__version__,
        },
        "model_fingerprint": fingerprint,
        "model_seed": int(model_seed),
        "initial_adapter": "initial",
        "final_weights": "final.safetensors",
        "lora": {"r": R, "alpha": ALPHA, "dropout": 0.0, "targets": TARGETS, "init_b_scale": B_SCALE, "seed": args.seed},
        "steps": args.steps,
        "optimizer": {
            "name": "torch.optim.AdamW",
            "lr": args.lr,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
            "weight_decay": 0.0,
            "schedule": "constant",
            "max_grad_norm": None,
        },
        "threads": torch.get_num_threads(),
        "label_ids": LABEL_IDS,
        "variants": batches,
    }
    text = json.dumps(reference, indent=1)
    # One line per innermost list (token ids, losses), so the file reads as a table.
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    (out / "reference.json").write_text(text + "\n")
    log(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
