//! Shared test fixtures: a tiny random Llama that uses the real SmolLM2 tokenizer, so training
//! tests run the real data pipeline and prompts in seconds.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

pub const GGUF: &str = "assets/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Write an HF folder with a 2-layer, 32-wide random Llama and the real tokenizer + chat template.
pub fn tiny_model_dir(dir: &Path, seed: u64) -> PathBuf {
    let out = dir.join("tiny-model");
    std::fs::create_dir_all(&out).unwrap();
    let tok = wick::tokenizer::GgufTokenizer::load(Path::new(GGUF)).expect("run scripts/fetch-assets first");
    let (v, d, ff, layers, heads, kv, hd) = (49152usize, 32usize, 64usize, 2usize, 4usize, 2usize, 8usize);
    let config = serde_json::json!({
        "model_type": "llama", "vocab_size": v, "hidden_size": d, "intermediate_size": ff,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
        "max_position_embeddings": 2048, "bos_token_id": 1, "eos_token_id": 2,
    });
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    let dev = Device::Cpu;
    // Deterministic values without a seeded device RNG: a cheap hash of (seed, tensor, index).
    let fill = |name: &str, shape: &[usize], std: f32| -> Tensor {
        let n: usize = shape.iter().product();
        let mut h = seed ^ name.bytes().fold(0xcbf29ce484222325u64, |a, b| (a ^ b as u64).wrapping_mul(0x100000001b3));
        let vals: Vec<f32> = (0..n)
            .map(|_| {
                h ^= h << 13;
                h ^= h >> 7;
                h ^= h << 17;
                ((h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * std
            })
            .collect();
        Tensor::from_vec(vals, shape, &dev).unwrap()
    };
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("model.embed_tokens.weight".into(), fill("emb", &[v, d], 1.0));
    t.insert("model.norm.weight".into(), fill("norm", &[d], 0.1).affine(1.0, 1.0).unwrap());
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        for n in ["input_layernorm", "post_attention_layernorm"] {
            t.insert(format!("{p}.{n}.weight"), Tensor::ones(d, candle_core::DType::F32, &dev).unwrap());
        }
        for (n, o, i_) in [
            ("self_attn.q_proj", heads * hd, d),
            ("self_attn.k_proj", kv * hd, d),
            ("self_attn.v_proj", kv * hd, d),
            ("self_attn.o_proj", d, heads * hd),
            ("mlp.gate_proj", ff, d),
            ("mlp.up_proj", ff, d),
            ("mlp.down_proj", d, ff),
        ] {
            let name = format!("{p}.{n}.weight");
            t.insert(name.clone(), fill(&name, &[o, i_], 0.3));
        }
    }
    candle_core::safetensors::save(&t, out.join("model.safetensors")).unwrap();
    tok.tokenizer.save(out.join("tokenizer.json"), false).unwrap();
    let tc = serde_json::json!({"chat_template": tok.chat_template});
    std::fs::write(out.join("tokenizer_config.json"), tc.to_string()).unwrap();
    out
}

/// [train] keys shared by the training tests (add max_steps and friends after them).
pub const TRAIN: &str = "batch_size = 4\neval_every = 2\neval_examples = 16\nwarmup_steps = 2\nlr = 0.01\nmax_seq_len = 128";

/// A config for the tiny model on the real Rotten Tomatoes data, writing under `dir`;
/// `train` is the body of the [train] section.
pub fn tiny_config(dir: &Path, model: &Path, train: &str) -> PathBuf {
    let root = std::env::current_dir().unwrap();
    let text = format!(
        r#"
[model]
source = "{model}"
[data]
path = "{data}"
text_column = "text"
label_column = "category"
group_column = "movie_name"
drop_labels = ["plot"]
label_map = {{ fresh = "positive", rotten = "negative" }}
[prompt]
system = ""
[lora]
r = 4
alpha = 8.0
dropout = 0.1
[train]
{train}
[output]
dir = "{out}"
run_name = "run"
"#,
        model = model.display(),
        data = root.join("assets/rotten_tomatoes_corpus_full.csv.bz2").display(),
        out = dir.join("ck").display(),
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A JSON file written by wick, parsed (a missing or bad file fails the test, naming it).
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}
