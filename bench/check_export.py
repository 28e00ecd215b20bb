#!/usr/bin/env python3
"""Check `wick export` with the Python ecosystem: the merged HF folder against PEFT's own adapter
model (transformers + PEFT), and the merged GGUF with the `gguf` package's reader.

    .venv-peer/bin/python bench/check_export.py --base checkpoints/bench-model \
        --adapter checkpoints/peft-adapter --hf checkpoints/merged-hf --gguf checkpoints/merged.gguf

Prints one JSON line: the largest |logit| difference between PeftModel(base, adapter) and
AutoModelForCausalLM(merged HF) over a few prompts, and for the GGUF its tensor count, the
metadata keys llama.cpp needs, and the largest difference between its attn_q / ffn_down tensors
(Q rows un-permuted) and the merged HF weights.
"""
import argparse
import json
import os


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--hf", required=True)
    ap.add_argument("--gguf", required=True)
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np
    import torch
    from gguf import GGUFReader
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(args.hf)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
        for t in ["An instant classic.", "Two hours I will never get back.", "Review: quietly devastating, beautifully acted."]
    ]
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32), args.adapter).eval()
    merged = AutoModelForCausalLM.from_pretrained(args.hf, dtype=torch.float32).eval()
    worst = 0.0
    with torch.no_grad():
        for p in prompts:
            ids = tok(p, return_tensors="pt", add_special_tokens=False)
            worst = max(worst, (peft_model(**ids).logits - merged(**ids).logits).abs().max().item())

    reader = GGUFReader(args.gguf)
    keys = set(reader.fields)
    need = ["general.architecture", "llama.block_count", "llama.embedding_length", "llama.attention.head_count",
            "llama.attention.head_count_kv", "tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
            "tokenizer.chat_template"]
    tensors = {t.name: t for t in reader.tensors}
    weights = load_file(os.path.join(args.hf, "model.safetensors"))
    heads = merged.config.num_attention_heads

    def unpermute(w, n):  # llama.cpp's rows (h, d/2, 2) back to HF's (h, 2, d/2)
        return w.reshape(n, w.shape[0] // n // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    def gguf_array(name):
        t = tensors[name]
        return np.asarray(t.data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])

    q = unpermute(gguf_array("blk.0.attn_q.weight"), heads)
    dq = float(np.abs(q - weights["model.layers.0.self_attn.q_proj.weight"].float().numpy()).max())
    dd = float(np.abs(gguf_array("blk.0.ffn_down.weight") - weights["model.layers.0.mlp.down_proj.weight"].float().numpy()).max())
    print(json.dumps({
        "peft_vs_merged_hf_max_logit_diff": worst,
        "gguf_tensors": len(tensors),
        "gguf_missing_keys": [k for k in need if k not in keys],
        "gguf_attn_q_max_diff": dq,
        "gguf_ffn_down_max_diff": dd,
    }))


if __name__ == "__main__":
    main()
