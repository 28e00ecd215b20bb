//! The "minilm" retriever on the real all-MiniLM-L6-v2 weights: embeddings against an
//! independent PyTorch run, rankings beside BM25's on a fixed corpus, config validation, and
//! the retrieval strategy with it. Skipped (with a message) when scripts/fetch-assets has not
//! put the model under assets/all-MiniLM-L6-v2.

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use wick::baseline::bm25::Bm25Index;
use wick::baseline::minilm::{DEFAULT_DIR, MAX_TOKENS, MiniLm, MiniLmIndex};
use wick::baseline::{BaselineOptions, Baselines, Strategy};
use wick::config::Config;
use wick::data::Example;

/// Whether scripts/fetch-assets has put the model in place; says so when it has not.
fn have_assets() -> bool {
    let ok = Path::new(DEFAULT_DIR).join("model.safetensors").is_file();
    if !ok {
        eprintln!("minilm tests: {DEFAULT_DIR} is missing (run scripts/fetch-assets); skipped");
    }
    ok
}

/// The encoder, or None (skip) when the assets are absent.
fn encoder() -> Option<MiniLm> {
    if !have_assets() {
        return None;
    }
    Some(MiniLm::load(Path::new(DEFAULT_DIR), &Device::Cpu).expect("the fetched MiniLM loads"))
}

const TEXTS: [&str; 3] = ["A warm, funny and moving film.", "An utterly joyless experience.", "The best movie I have seen this year."];

fn long_text() -> String {
    vec!["The plot thickens while the actors shine."; 40].join(" ")
}

// Reference values: the same assets/all-MiniLM-L6-v2 files through PyTorch (torch 2.15.0,
// transformers 5.23.0, the .venv-peer venv), with sentence-transformers' pooling written out
// (its Pooling(mean) + Normalize modules):
//
//     import torch
//     from transformers import AutoModel, AutoTokenizer
//     d = "assets/all-MiniLM-L6-v2"
//     tok = AutoTokenizer.from_pretrained(d); model = AutoModel.from_pretrained(d).eval()
//     texts = [...]  # TEXTS, or [TEXTS[0], long_text()] for the truncation values
//     enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
//     with torch.no_grad(): h = model(**enc).last_hidden_state
//     m = enc["attention_mask"].unsqueeze(-1).float()
//     e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2, dim=1)
//     print(enc["input_ids"][0].tolist(), e[0, :8].tolist(), (e @ e.T).tolist())
const IDS_0: [u32; 10] = [101, 1037, 4010, 1010, 6057, 1998, 3048, 2143, 1012, 102];
const FIRST8_0: [f32; 8] = [-0.0702335, -0.0354102, -0.0013245, 0.027085, 0.0249603, 0.0233466, 0.0889814, -0.0448353];
/// cos(0, 1), cos(0, 2), cos(1, 2).
const COS: [f32; 3] = [0.3074942, 0.4066114, 0.2150169];
/// The long text, cut to 256 tokens as sentence-transformers cuts it.
const FIRST8_LONG: [f32; 8] = [-0.0415642, -0.0222785, 0.0317312, -0.0342007, -0.0778408, 0.070234, -0.0035466, -0.0206919];
const COS_0_LONG: f32 = 0.2230338;

#[test]
fn embeddings_match_sentence_transformers_pooling_in_pytorch() -> anyhow::Result<()> {
    let Some(enc) = encoder() else { return Ok(()) };
    assert_eq!(enc.dim(), 384);
    assert_eq!(enc.ids(TEXTS[0])?, IDS_0, "lower-cased WordPiece with [CLS] and [SEP]");
    let (e, ms) = enc.embed(&TEXTS)?;
    assert_eq!(e.dims(), [3, 384]);
    assert!(ms.iter().all(|&m| m > 0.0));
    let rows: Vec<Vec<f32>> = e.to_vec2()?;
    for (i, (got, want)) in rows[0].iter().zip(FIRST8_0).enumerate() {
        assert!((got - want).abs() < 1e-4, "dim {i}: {got} vs {want}");
    }
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    for r in &rows {
        assert!((dot(r, r) - 1.0).abs() < 1e-5, "rows are unit-norm");
    }
    for ((a, b), want) in [(0, 1), (0, 2), (1, 2)].into_iter().zip(COS) {
        let got = dot(&rows[a], &rows[b]);
        assert!((got - want).abs() < 1e-4, "cos({a}, {b}) = {got}, want {want}");
    }
    // Longer than 256 tokens: cut to [CLS] + 254 + [SEP], padded beside a short text.
    let long = long_text();
    assert_eq!(enc.ids(&long)?.len(), MAX_TOKENS);
    let (e, _) = enc.embed(&[TEXTS[0], &long])?;
    let rows: Vec<Vec<f32>> = e.to_vec2()?;
    for (i, (got, want)) in rows[1].iter().zip(FIRST8_LONG).enumerate() {
        assert!((got - want).abs() < 1e-4, "long text, dim {i}: {got} vs {want}");
    }
    assert!((dot(&rows[0], &rows[1]) - COS_0_LONG).abs() < 1e-4);
    // Alone or batched with a longer text, a text embeds the same: padding counts for nothing.
    let (alone, _) = enc.embed(&TEXTS[..1])?;
    let alone: Vec<f32> = alone.to_vec2()?.remove(0);
    assert!(alone.iter().zip(&rows[0]).all(|(a, b)| (a - b).abs() < 1e-5));
    Ok(())
}

const CORPUS: [&str; 6] = [
    "Heavy rain flooded the streets of the city.",
    "A dog barked at the mailman all morning.",
    "Stock markets fell sharply after the interest rate announcement.",
    "The recipe needs two cups of flour and an egg.",
    "The striker scored twice in the final minutes of the match.",
    "The cat sat on the mat.",
];

#[test]
fn minilm_finds_paraphrases_that_bm25_cannot() -> anyhow::Result<()> {
    let Some(enc) = encoder() else { return Ok(()) };
    let index = MiniLmIndex::build(enc, &CORPUS)?;
    let bm25 = Bm25Index::build(&CORPUS);
    assert_eq!((index.len(), bm25.len()), (6, 6));
    // Shared words: both retrievers agree.
    for (query, want) in [("Shares dropped when the central bank raised rates.", 2), ("How much flour goes into the recipe?", 3)] {
        let dense = index.nearest(query, 3)?;
        let lexical = bm25.nearest(query, 3);
        assert_eq!((dense[0].0, lexical[0].0), (want, want), "{query}: {dense:?} / {lexical:?}");
        assert!(lexical[0].1 > 0.0);
    }
    // No word in common: BM25 falls back to the first positions at score 0, MiniLM still finds
    // the sentence with the same meaning (PyTorch: cos 0.57 and 0.43, next best 0.23 and 0.10).
    for (query, want) in [("A kitten was sleeping on the rug.", 5), ("The football team won the game with a late goal.", 4)] {
        let dense = index.nearest(query, 3)?;
        assert_eq!(dense.len(), 3);
        assert_eq!(dense[0].0, want, "{query}: {dense:?}");
        assert!(dense[0].1 > dense[1].1 + 0.1 && dense[1].1 >= dense[2].1, "{query}: {dense:?}");
        assert_eq!(bm25.nearest(query, 2), vec![(0, 0.0), (1, 0.0)], "{query}");
    }
    // k beyond the pool is the whole pool; one query alone ranks as it does in a batch.
    assert_eq!(index.nearest("rain", 9)?.len(), 6);
    let (batch, ms) = index.nearest_batch(&["A kitten was sleeping on the rug.", "How much flour goes into the recipe?"], 2)?;
    assert_eq!(batch.iter().map(|r| r[0].0).collect::<Vec<_>>(), [5, 3]);
    assert!(ms.iter().all(|&m| m > 0.0));
    // A text's nearest neighbour is itself.
    assert_eq!(index.nearest(CORPUS[1], 1)?, vec![(1, index.nearest(CORPUS[1], 1)?[0].1)]);
    assert!((index.nearest(CORPUS[1], 1)?[0].1 - 1.0).abs() < 1e-5);
    Ok(())
}

fn config_text(prompt: &str) -> String {
    format!("[data]\npath = \"Cargo.toml\"\n[prompt]\n{prompt}\n")
}

#[test]
fn config_accepts_minilm_and_rejects_unknown_retrievers_in_one_line() {
    for r in ["decoder", "bm25"] {
        Config::parse(&config_text(&format!("retriever = \"{r}\""))).unwrap().validate().unwrap();
    }
    let err = Config::parse(&config_text("retriever = \"dense\"")).unwrap_err();
    assert_eq!(err, "line 4: prompt.retriever = \"dense\": expected decoder, bm25, minilm, did you mean `decoder`?");
    let cfg = Config::parse(&config_text("retriever = \"minilm\"\nretriever_model = \"nowhere/minilm\"")).unwrap();
    let err = cfg.validate().unwrap_err();
    assert!(!err.contains('\n') && err.contains("prompt.retriever_model") && err.contains("nowhere/minilm"), "{err}");
    assert!(err.contains("scripts/fetch-assets"), "{err}");
    // A folder without the weights: loading says which file and what to run.
    let tmp = tempfile::tempdir().unwrap();
    let err = MiniLm::load(tmp.path(), &Device::Cpu).unwrap_err().to_string();
    assert!(!err.contains('\n') && err.contains("config.json") && err.contains("scripts/fetch-assets"), "{err}");
    if !have_assets() {
        return;
    }
    let cfg = Config::parse(&config_text("retriever = \"minilm\"")).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.prompt.retriever_model, Path::new(DEFAULT_DIR));
    // The default model path is left out of the serialised config, so the prompt results hash
    // of a config that does not use MiniLM is what it was before the key existed.
    let bm25 = Config::parse(&config_text("retriever = \"bm25\"")).unwrap();
    let moved = Config::parse(&config_text("retriever = \"bm25\"\nretriever_model = \"elsewhere\"")).unwrap();
    assert!(!toml::to_string(&bm25).unwrap().contains("retriever_model"));
    assert_ne!(bm25.prompt_results_hash(), moved.prompt_results_hash());
}

#[test]
fn retrieval_strategy_runs_on_minilm_neighbours() -> anyhow::Result<()> {
    if !have_assets() {
        return Ok(());
    }
    let loaded = wick::model::load(common::GGUF, DType::F32, &Device::Cpu).expect("run scripts/fetch-assets first");
    let mut cfg = Config::parse("").expect("defaults parse");
    cfg.prompt.retriever = wick::config::Retriever::Minilm;
    cfg.prompt.k_shot = 2;
    let train: Vec<Example> =
        CORPUS.iter().enumerate().map(|(i, t)| Example { text: t.to_string(), label: i % 2, group: None, line: i + 1 }).collect();
    let texts: Vec<String> = ["A kitten was sleeping on the rug.", CORPUS[2]].map(String::from).to_vec();
    let b = Baselines::new(&loaded, &cfg, &train, BaselineOptions { batch_size: 4, ..BaselineOptions::default() })?;
    let (demos, ms) = b.neighbours(&texts)?;
    // Most similar last, closest to the question.
    assert_eq!(demos[0].last().map(|d| d.text.as_str()), Some(CORPUS[5]));
    assert_eq!(demos[1].last().map(|d| d.text.as_str()), Some(CORPUS[2]));
    assert!(demos.iter().all(|d| d.len() == 2) && ms.iter().all(|&m| m > 0.0));
    let run = b.run(&[Strategy::Retrieval], &texts)?;
    assert_eq!(run[0].neighbour_labels[1].last(), Some(&0), "its own label (position 2 is even)");
    assert_eq!(run[0].variants[0].probs.len(), 2);
    Ok(())
}
