//! The retrieval strategy's accuracy with each retriever, beside zero-shot, on the first N dev
//! examples: the main template only (as `wick compare` chooses on dev), the pool the config's
//! `compare.retrieval_pool` takes, each pair of strategies compared on the same examples.
//!
//!     cargo run --release --example retrieval_accuracy -- configs/rotten-tomatoes.toml [N] [RETRIEVERS]
//!
//! N defaults to 400; RETRIEVERS is a comma-separated subset of decoder,bm25,minilm (default
//! all three). Only dev is scored, never test. The decoder's index is cached in a temporary
//! folder, not the run's.
use std::time::Instant;

use wick::baseline::{BaselineOptions, Baselines, Memo, Strategy};
use wick::stats::{PairedComparison, Z95, wilson};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let cfg = wick::config::Config::load(std::path::Path::new(args.get(1).map_or("configs/rotten-tomatoes.toml", String::as_str)))?;
    let n: usize = args.get(2).map_or(400, |s| s.parse().unwrap_or(400));
    let which: Vec<String> = args.get(3).map_or("decoder,bm25,minilm", String::as_str).split(',').map(|s| s.trim().to_string()).collect();
    let (splits, _) = wick::data::load_splits(&cfg.data, wick::data::ReadMode::Strict)?;
    let dev = &splits.dev[..n.min(splits.dev.len())];
    let texts: Vec<String> = dev.iter().map(|e| e.text.clone()).collect();
    let gold: Vec<usize> = dev.iter().map(|e| e.label).collect();
    let loaded = wick::eval::load_model(&cfg.model)?;
    let pool = (cfg.compare.retrieval_pool > 0).then_some(cfg.compare.retrieval_pool);
    let batch_size = cfg.compare.batch_size;
    let opts = BaselineOptions { batch_size, calibrate_on: Strategy::ZeroShot, all_variants: false, retrieval_pool: pool };
    let cache = tempfile::tempdir()?;
    let mut rows: Vec<(String, Vec<usize>, f64, f64)> = Vec::new();

    let start = Instant::now();
    let b = Baselines::new(&loaded, &cfg, &splits.train, opts)?;
    let run = b.run_main(Strategy::ZeroShot, &texts, &mut Memo::default())?;
    rows.push(("zero-shot".into(), run.variants[0].predicted.clone(), 0.0, start.elapsed().as_secs_f64()));
    for r in &which {
        let mut c = cfg.clone();
        c.prompt.retriever = r.clone();
        let b = Baselines::new(&loaded, &c, &splits.train, opts)?;
        let (b, info) = wick::eval::prepare_retrieval(b, &loaded, &c, batch_size, cache.path())?;
        let start = Instant::now();
        let run = b.run_main(Strategy::Retrieval, &texts, &mut Memo::default())?;
        rows.push((format!("retrieval ({r})"), run.variants[0].predicted.clone(), info.index_seconds, start.elapsed().as_secs_f64()));
    }

    println!("first {} dev examples, pool {:?}, k = {}, main template", texts.len(), pool, cfg.prompt.k_shot);
    for (name, pred, index_s, s) in &rows {
        let hits = pred.iter().zip(&gold).filter(|(p, g)| p == g).count();
        let w = wilson(hits, gold.len(), Z95);
        println!(
            "{name:20} accuracy {:.1}% [{:.1}, {:.1}]  index {index_s:.1} s  scoring {s:.0} s",
            100.0 * hits as f64 / gold.len().max(1) as f64,
            100.0 * w.lo,
            100.0 * w.hi
        );
    }
    for (i, (a, pa, ..)) in rows.iter().enumerate() {
        for (b, pb, ..) in &rows[i + 1..] {
            let p = PairedComparison::new(a, b, &gold, pa, pb, 2000, 7);
            println!(
                "{a} - {b}: {:+.1} points, paired 95% interval [{:+.1}, {:+.1}], McNemar p = {:.3} ({} vs {} discordant)",
                100.0 * p.difference,
                100.0 * p.interval.lo,
                100.0 * p.interval.hi,
                p.p_value,
                p.only_a_correct,
                p.only_b_correct
            );
        }
    }
    Ok(())
}
