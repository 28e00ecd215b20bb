//! How well each retriever finds neighbours that mean something, without scoring any prompt:
//! on the config's dev split, how often the nearest pool text has the right label (top-1), how
//! often a majority vote of the k nearest does, and index build time.
//!
//!     cargo run --release --example retrieval_probe -- configs/rotten-tomatoes.toml [POOL] [QUERIES]
//!
//! The pool is the same seeded sample `compare.retrieval_pool` takes (default 1,000).
use std::time::Instant;

use candle_core::{DType, Device};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use wick::baseline::bm25::Bm25Index;
use wick::baseline::retrieval::{RetrievalIndex, embed};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let cfg = wick::config::Config::load(std::path::Path::new(args.get(1).map_or("configs/rotten-tomatoes.toml", String::as_str)))?;
    let pool_n: usize = args.get(2).map_or(1000, |s| s.parse().unwrap_or(1000));
    let queries_n: usize = args.get(3).map_or(500, |s| s.parse().unwrap_or(500));
    let (splits, _) = wick::data::load_splits(&cfg.data, wick::data::ReadMode::Strict)?;
    // The same seeded pool as Baselines::new.
    let mut pool: Vec<usize> = (0..splits.train.len()).collect();
    if pool_n < pool.len() {
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
    let score = |name: &str, build_s: f64, nearest: Vec<Vec<(usize, f32)>>, search_s: f64| -> Vec<usize> {
        let top1 = nearest.iter().zip(queries).filter(|(n, q)| n.first().is_some_and(|h| pool_labels[h.0] == q.label)).count();
        let vote = nearest
            .iter()
            .zip(queries)
            .filter(|(n, q)| {
                let mut counts = vec![0usize; n_labels];
                n.iter().for_each(|h| counts[pool_labels[h.0]] += 1);
                // Ties go to the nearest neighbour's label.
                let best = *counts.iter().max().unwrap_or(&0);
                let label = n.iter().map(|h| pool_labels[h.0]).find(|&l| counts[l] == best).unwrap_or(0);
                label == q.label
            })
            .count();
        let nq = queries.len() as f64;
        println!(
            "{name:8} pool {:5}  top-1 label {:.1}%  {k}-NN vote {:.1}%  build {:.2} s  search {:.2} ms/query",
            pool_texts.len(),
            100.0 * top1 as f64 / nq,
            100.0 * vote as f64 / nq,
            build_s,
            1000.0 * search_s / nq
        );
        nearest.iter().map(|n| n.first().map_or(usize::MAX, |h| pool_labels[h.0])).collect()
    };
    let start = Instant::now();
    let bm25 = Bm25Index::build(&pool_texts);
    let build = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let nearest: Vec<Vec<(usize, f32)>> = query_texts.iter().map(|q| bm25.nearest(q, k)).collect();
    let bm25_top1 = score("bm25", build, nearest, start.elapsed().as_secs_f64());

    let loaded = wick::model::load(&cfg.model.source, DType::F32, &Device::Cpu)?;
    let start = Instant::now();
    let index = RetrievalIndex::build(&loaded.model, &loaded.tokenizer, &pool_texts, 16, cfg.train.max_seq_len)?;
    let build = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let (q, _) = embed(&loaded.model, &loaded.tokenizer, &query_texts, 16, cfg.train.max_seq_len)?;
    let nearest = index.nearest(&q, k)?;
    let decoder_top1 = score("decoder", build, nearest, start.elapsed().as_secs_f64());
    let p = wick::stats::PairedComparison::new("bm25", "decoder", &gold, &bm25_top1, &decoder_top1, 2000, 7);
    println!(
        "top-1 label, bm25 - decoder: {:+.1} points, paired 95% interval [{:+.1}, {:+.1}], McNemar p = {:.3} ({} vs {} discordant)",
        100.0 * p.difference,
        100.0 * p.interval.lo,
        100.0 * p.interval.hi,
        p.p_value,
        p.only_a_correct,
        p.only_b_correct
    );
    Ok(())
}
