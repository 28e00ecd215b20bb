#!/usr/bin/env python3
"""PyTorch + PEFT peer for `wick bench`: the same LoRA training step, measured the same way.

One training step = forward of a B x T batch through the LoRA-wrapped base model, the verbalizer
loss (cross-entropy over the two label-word logits " positive" / " negative" at the last
position, computed from the last hidden state and just those two lm_head rows, never the full
vocabulary), backward, AdamW (lr 1e-4) on the LoRA parameters. Run it from the venv that
scripts/setup-peer builds:

    .venv-peer/bin/python bench/peer_pytorch.py --model-dir checkpoints/bench-model --json

With --json the last line printed is exactly one JSON object (keys listed in bench/README.md);
progress goes to stderr.
"""
import time

T0 = time.time()  # as early as possible: before argparse, psutil and torch are imported

import argparse
import json
import os
import resource
import sys
import warnings

POSITIVE_ID = 2731  # " positive" in SmolLM2's tokenizer
NEGATIVE_ID = 3524  # " negative"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", required=True, help="HF folder from `wick model export`")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed train steps (and timed forwards)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (>= 1)")
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    p.add_argument("--autocast", action="store_true",
                   help="f32 weights, every step and forward under torch.autocast('cpu', dtype=torch.bfloat16)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--json", action="store_true", help="print exactly one JSON line at the end")
    a = p.parse_args(argv)
    if a.warmup < 1 or a.steps < 1:
        p.error("--warmup and --steps must be >= 1")
    return a


def median(xs):
    """Upper median (xs[n // 2] of the sorted list), the definition `wick bench` uses."""
    return sorted(xs)[len(xs) // 2]


def log(*a):
    print("peer:", *a, file=sys.stderr, flush=True)


def process_start(fallback):
    """The process's own start time (includes interpreter start-up); T0 when unknown."""
    try:
        import psutil

        return min(psutil.Process().create_time(), fallback)
    except Exception:
        return fallback


def main():
    args = parse_args()
    start = process_start(T0)
    # Threads before torch starts its pools; no hub access, ever (the model is a local folder).
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import peft
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]

    base = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=dtype)
    base.config.use_cache = False
    # N for the 4N basis: every base weight except the token embedding / lm_head (tied in
    # SmolLM2: named_parameters() yields the shared tensor once, and both names are excluded).
    n_params = sum(
        p.numel()
        for name, p in base.named_parameters()
        if "embed_tokens" not in name and "lm_head" not in name
    )
    cfg = LoraConfig(
        r=args.r,
        lora_alpha=args.alpha,
        lora_dropout=args.dropout,
        target_modules=[t.strip() for t in args.targets.split(",") if t.strip()],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, cfg)
    causal = model.get_base_model()  # LlamaForCausalLM with the LoRA layers injected
    trunk = causal.model  # LlamaModel: embeddings, decoder layers, final norm
    # Label order of the config (labels = ["negative", "positive"]), as wick's prompter has it.
    label_rows = causal.lm_head.weight[[NEGATIVE_ID, POSITIVE_ID]].detach()  # [2, H], frozen
    trainable = [p for p in model.parameters() if p.requires_grad]
    log(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"attention {causal.config._attn_implementation}, N = {n_params:,} non-embedding params, "
        f"{sum(p.numel() for p in trainable):,} LoRA params"
    )
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)  # as wick bench: no decay

    B, T = args.batch, args.seq
    ids = (torch.arange(B * T, dtype=torch.long) * 7919 % 40000 + 100).reshape(B, T)
    gold = torch.arange(B, dtype=torch.long) % 2  # 0 = " negative", 1 = " positive", alternating

    import contextlib

    def autocast():
        # bf16 matmuls on oneDNN with f32 weights and optimizer: PyTorch's own mixed precision.
        return torch.autocast("cpu", dtype=torch.bfloat16) if args.autocast else contextlib.nullcontext()

    def label_logits():
        with autocast():
            hidden = trunk(input_ids=ids, use_cache=False).last_hidden_state  # [B, T, H], normed
            return hidden[:, -1, :] @ label_rows.t().to(hidden.dtype)  # [B, 2]

    def train_step():
        opt.zero_grad(set_to_none=True)
        logits = label_logits().float()
        loss = torch.nn.functional.nll_loss(torch.log_softmax(logits, dim=-1), gold)
        loss.backward()
        opt.step()
        return loss.item()

    model.train()
    step_times, losses = [], []
    first_step_done = None
    ready = time.time()
    for i in range(args.warmup + args.steps):
        t, c = time.perf_counter(), time.process_time()
        losses.append(train_step())
        dt, cpu = time.perf_counter() - t, time.process_time() - c
        if i == 0:
            first_step_done = time.time()
            log(f"first step done {first_step_done - start:.2f}s after process start (step {dt:.2f}s)")
        if i >= args.warmup:
            step_times.append(dt)
        # cpu/wall well below the thread count means the box was busy (contended measurement).
        log(f"train step {i + 1}/{args.warmup + args.steps}: {dt:.3f}s (cpu {cpu / dt:.2f}x wall) loss {losses[-1]:.4f}")

    model.eval()
    fwd_times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.steps):
            t, c = time.perf_counter(), time.process_time()
            label_logits()
            dt, cpu = time.perf_counter() - t, time.process_time() - c
            if i >= args.warmup:
                fwd_times.append(dt)
            log(f"forward {i + 1}/{args.warmup + args.steps}: {dt:.3f}s (cpu {cpu / dt:.2f}x wall)")

    # The GEMM ceiling: the MLP's two f32 GEMM shapes for B*T tokens (576 -> 1536 and 1536 -> 576
    # for SmolLM2-135M), in this process with these threads: best single matmul over 10 timed
    # runs of each shape, GFLOP/s = 2mnk / t, the better shape (as `wick bench` does).
    rows, hid, inner = B * T, causal.config.hidden_size, causal.config.intermediate_size
    gemm_gflops = 0.0
    with torch.inference_mode():
        for k, n in ((hid, inner), (inner, hid)):
            a, b = torch.randn(rows, k, dtype=torch.float32), torch.randn(k, n, dtype=torch.float32)
            torch.matmul(a, b)
            for _ in range(10):
                t = time.perf_counter()
                torch.matmul(a, b)
                gemm_gflops = max(gemm_gflops, 2 * rows * k * n / (time.perf_counter() - t) / 1e9)

    step = median(step_times)
    fwd = median(fwd_times)
    tokens = B * T
    train_flops = 4 * n_params * tokens / step
    eval_flops = 2 * n_params * tokens / fwd
    import safetensors

    out = {
        "impl": "pytorch",
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "safetensors": safetensors.__version__,
            "cuda": torch.cuda.is_available(),
        },
        "batch": B,
        "seq": T,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "autocast": args.autocast,
        "train_step_s": round(step, 6),
        "train_tokens_per_s": round(tokens / step, 3),
        "forward_s": round(fwd, 6),
        "eval_tokens_per_s": round(tokens / fwd, 3),
        "eval_examples_per_s": round(B / fwd, 3),
        "step_forward_ratio": round(step / fwd, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "start_to_first_step_s": round(first_step_done - start, 4),
        "start_to_ready_s": round(ready - start, 4),
        "gemm_gflops": round(gemm_gflops, 3),
        "nonembedding_params": n_params,
        "train_flops_per_s": round(train_flops, 1),
        "train_share_of_gemm": round(train_flops / (gemm_gflops * 1e9), 4),
        "eval_flops_per_s": round(eval_flops, 1),
        "eval_share_of_gemm": round(eval_flops / (gemm_gflops * 1e9), 4),
    }
    if args.json:
        print(json.dumps(out), flush=True)
    else:
        for k, v in out.items():
            print(f"{k:24} {v}")


if __name__ == "__main__":
    main()
