//! How well each retriever finds neighbours that mean something, without scoring any prompt:
//! on the config's dev split, how often the nearest pool text has the right label (top-1), how
//! often a majority vote of the k nearest does, index build time and peak memory, for BM25,
//! MiniLM and the decoder, each pair compared on the same queries.
//!
//!     cargo run --release --example retrieval_probe -- configs/rotten-tomatoes.toml [POOL] [QUERIES] [RETRIEVERS]
//!
//! The pool is the same seeded sample `compare.retrieval_pool` takes (default 1,000; 0: the
//! whole train split). RETRIEVERS is a comma-separated subset of bm25,minilm,decoder (default
//! all three). Peak memory is the rise of this process's peak RSS over its RSS before the build
//! (Linux; the peak is reset through /proc/self/clear_refs), model loading included for MiniLM
//! but not for the decoder, whose model the prompts need anyway.
use std::time::Instant;

use candle_core::{DType, Device};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use wick::baseline::bm25::Bm25Index;
use wick::baseline::minilm::{MiniLm, MiniLmIndex};
use wick::baseline::retrieval::{RetrievalIndex, embed};
use wick::stats::{PairedComparison, Z95, wilson};

/// A `/proc/self/status` field in MB (0 where unavailable).
fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Reset the peak RSS to the current RSS, so the next peak belongs to the next build.
fn reset_peak() -> f64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_mb("VmRSS:")
}

struct Measured {
    name: &'static str,
    /// Label of the nearest neighbour, and of the k-NN vote, per query.
    top1: Vec<usize>,
    vote: Vec<usize>,
    build_s: f64,
    peak_mb: f64,
    search_ms: f64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let cfg = wick::data::load_config(std::path::Path::new(args.get(1).map_or("configs/rotten-tomatoes.toml", String::as_str)))?;
    let pool_n: usize = args.get(2).map_or(1000, |s| s.parse().unwrap_or(1000));
    let queries_n: usize = args.get(3).map_or(500, |s| s.parse().unwrap_or(500));
    let which: Vec<String> = args.get(4).map_or("bm25,minilm,decoder", String::as_str).split(',').map(|s| s.trim().to_string()).collect();
    let (splits, _) = wick::data::load_splits(&cfg.data, wick::data::ReadMode::Strict)?;
    // The same seeded pool as Baselines::new.
    let mut pool: Vec<usize> = (0..splits.train.len()).collect();
    if pool_n > 0 && pool_n < pool.len() {
        pool.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(cfg.prompt.seed ^ 0x9001));
        pool.truncate(pool_n);
    }
    let pool_texts: Vec<&str> = pool.iter().map(|&i| splits.train[i].text.as_str()).collect();
    let pool_labels: Vec<usize> = pool.iter().map(|&i| splits.train[i].label).collect();
    let queries = &splits.dev[..queries_n.min(splits.dev.len())];
    let query_texts: Vec<&str> = queries.iter().map(|e| e.text.as_str()).collect();
    let k = cfg.prompt.k_shot;
    let n_labels = cfg.data.labels.len();
    let gold: Vec<usize> = queries.iter().map(|e| e.label).collect();
    let labels_of = |nearest: &[Vec<(usize, f32)>]| -> (Vec<usize>, Vec<usize>) {
        let top1 = nearest.iter().map(|n| n.first().map_or(usize::MAX, |h| pool_labels[h.0])).collect();
        let vote = nearest
            .iter()
            .map(|n| {
                let mut counts = vec![0usize; n_labels];
                n.iter().for_each(|h| counts[pool_labels[h.0]] += 1);
                // Ties go to the nearest neighbour's label.
                let best = *counts.iter().max().unwrap_or(&0);
                n.iter().map(|h| pool_labels[h.0]).find(|&l| counts[l] == best).unwrap_or(usize::MAX)
            })
            .collect();
        (top1, vote)
    };
    let mut results: Vec<Measured> = Vec::new();

    if which.iter().any(|w| w == "bm25") {
        let rss = reset_peak();
        let start = Instant::now();
        let bm25 = Bm25Index::build(&pool_texts);
        let build_s = start.elapsed().as_secs_f64();
        let peak_mb = status_mb("VmHWM:") - rss;
        let start = Instant::now();
        let nearest: Vec<Vec<(usize, f32)>> = query_texts.iter().map(|q| bm25.nearest(q, k)).collect();
        let search_ms = 1000.0 * start.elapsed().as_secs_f64() / query_texts.len().max(1) as f64;
        let (top1, vote) = labels_of(&nearest);
        results.push(Measured { name: "bm25", top1, vote, build_s, peak_mb, search_ms });
    }
    if which.iter().any(|w| w == "minilm") {
        let rss = reset_peak();
        let start = Instant::now();
        let index = MiniLmIndex::build(MiniLm::load(&cfg.prompt.retriever_model, &Device::Cpu)?, &pool_texts)?;
        let build_s = start.elapsed().as_secs_f64();
        let peak_mb = status_mb("VmHWM:") - rss;
        let start = Instant::now();
        let (nearest, _) = index.nearest_batch(&query_texts, k)?;
        let search_ms = 1000.0 * start.elapsed().as_secs_f64() / query_texts.len().max(1) as f64;
        let (top1, vote) = labels_of(&nearest);
        results.push(Measured { name: "minilm", top1, vote, build_s, peak_mb, search_ms });
    }
    if which.iter().any(|w| w == "decoder") {
        let loaded = wick::model::load(&cfg.model.source, DType::F32, &Device::Cpu)?;
        let rss = reset_peak();
        let start = Instant::now();
        let index = RetrievalIndex::build(&loaded.model, &loaded.tokenizer, &pool_texts, 16, cfg.train.max_seq_len)?;
        let build_s = start.elapsed().as_secs_f64();
        let peak_mb = status_mb("VmHWM:") - rss;
        let start = Instant::now();
        let (q, _) = embed(&loaded.model, &loaded.tokenizer, &query_texts, 16, cfg.train.max_seq_len)?;
        let nearest = index.nearest(&q, k)?;
        let search_ms = 1000.0 * start.elapsed().as_secs_f64() / query_texts.len().max(1) as f64;
        let (top1, vote) = labels_of(&nearest);
        results.push(Measured { name: "decoder", top1, vote, build_s, peak_mb, search_ms });
    }

    let nq = queries.len();
    let pct = |pred: &[usize]| {
        let hits = pred.iter().zip(&gold).filter(|(p, g)| p == g).count();
        let w = wilson(hits, nq, Z95);
        format!("{:.1}% [{:.1}, {:.1}]", 100.0 * hits as f64 / nq.max(1) as f64, 100.0 * w.lo, 100.0 * w.hi)
    };
    println!("pool {} train texts, {nq} dev queries, k = {k}", pool_texts.len());
    for r in &results {
        println!(
            "{:8} top-1 label {}  {k}-NN vote {}  build {:.2} s  peak +{:.0} MB  search {:.2} ms/query",
            r.name,
            pct(&r.top1),
            pct(&r.vote),
            r.build_s,
            r.peak_mb,
            r.search_ms
        );
    }
    let vote_name = format!("{k}-NN vote");
    for (i, a) in results.iter().enumerate() {
        for b in &results[i + 1..] {
            for (what, pa, pb) in [("top-1 label", &a.top1, &b.top1), (vote_name.as_str(), &a.vote, &b.vote)] {
                let p = PairedComparison::new(a.name, b.name, &gold, pa, pb, 2000, 7);
                println!(
                    "{what}, {} - {}: {:+.1} points, paired 95% interval [{:+.1}, {:+.1}], McNemar p = {:.3} ({} vs {} discordant)",
                    a.name,
                    b.name,
                    100.0 * p.difference,
                    100.0 * p.interval.lo,
                    100.0 * p.interval.hi,
                    p.p_value,
                    p.only_a_correct,
                    p.only_b_correct
                );
            }
        }
    }
    Ok(())
}
