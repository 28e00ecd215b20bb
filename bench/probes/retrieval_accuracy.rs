//! The retrieval strategy's accuracy with each retriever, beside zero-shot, on the first N
//! examples of a split: the main template only (as `wick compare` chooses on dev), the pool the
//! config's `compare.retrieval_pool` takes, each pair of strategies compared on the same examples.
//!
//!     cargo run --release --example retrieval_accuracy -- CONFIG [N] [RETRIEVERS] [SPLIT] [REPORT]
//!
//! N defaults to 400 (0: the whole split); RETRIEVERS is a comma-separated subset of
//! decoder,bm25,minilm (default all three); SPLIT is dev (default) or test. The retriever is
//! chosen on dev; a test run describes the retrievers that were not chosen, beside the compare
//! report's rows, and chooses nothing. REPORT, a `wick compare` report.json of the same split and
//! examples, adds its rows (every prompt strategy and the tuned model) to the paired tests, so a
//! retriever need not be scored twice. The decoder's index is cached in a temporary folder, not
//! the run's.
use std::time::Instant;

use wick::baseline::{BaselineOptions, Baselines, Memo, Strategy};
use wick::stats::{PairedComparison, Z95, wilson};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let cfg = wick::data::load_config(std::path::Path::new(args.get(1).map_or("configs/rotten-tomatoes.toml", String::as_str)))?;
    let n: usize = args.get(2).map_or(400, |s| s.parse().unwrap_or(400));
    let which: Vec<String> = args.get(3).map_or("decoder,bm25,minilm", String::as_str).split(',').map(|s| s.trim().to_string()).collect();
    let split = args.get(4).map_or("dev", String::as_str);
    let (splits, _) = wick::data::load_splits(&cfg.data, wick::data::ReadMode::Strict)?;
    let examples = match split {
        "dev" => &splits.dev,
        "test" => &splits.test,
        other => anyhow::bail!("split must be dev or test, not {other:?}"),
    };
    let examples = &examples[..if n == 0 { examples.len() } else { n.min(examples.len()) }];
    let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
    let gold: Vec<usize> = examples.iter().map(|e| e.label).collect();
    let stored = match args.get(5) {
        Some(path) => stored_rows(std::path::Path::new(path), &gold)?,
        None => Vec::new(),
    };
    let loaded = wick::eval::load_model(&cfg.model)?;
    let pool = (cfg.compare.retrieval_pool > 0).then_some(cfg.compare.retrieval_pool);
    let batch_size = cfg.compare.batch_size;
    let opts = BaselineOptions { batch_size, calibrate_on: Strategy::ZeroShot, all_variants: false, retrieval_pool: pool };
    let cache = tempfile::tempdir()?;
    let mut rows: Vec<(String, Vec<usize>, f64, f64)> = Vec::new();

    // Each row is kept under the run folder, keyed by what decides it, so a second run (say,
    // with REPORT once the compare has finished) does not score it again.
    let store = cfg.run_dir().join("retrieval-accuracy");
    let key = |name: &str| format!("{}|{split}|{}|pool {pool:?}|k {}|{name}", cfg.prompt_results_hash(), texts.len(), cfg.prompt.k_shot);
    let file = |name: &str| store.join(format!("{split}-{}-{}.json", texts.len(), name.replace([' ', '(', ')'], "")));
    let mut measure = |name: String, run: &dyn Fn() -> anyhow::Result<(Vec<usize>, f64)>| -> anyhow::Result<()> {
        let path = file(&name);
        let kept: Option<(String, Vec<usize>, f64, f64)> = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok());
        if let Some((_, pred, index_s, s)) = kept.filter(|k| k.0 == key(&name)) {
            eprintln!("{name}: reusing {}", path.display());
            rows.push((name, pred, index_s, s));
            return Ok(());
        }
        let start = Instant::now();
        let (pred, index_s) = run()?;
        let seconds = start.elapsed().as_secs_f64() - index_s;
        std::fs::create_dir_all(&store)?;
        std::fs::write(&path, serde_json::to_string(&(key(&name), &pred, index_s, seconds))?)?;
        rows.push((name, pred, index_s, seconds));
        Ok(())
    };
    measure("zero-shot".into(), &|| {
        let b = Baselines::new(&loaded, &cfg, &splits.train, opts)?;
        Ok((b.run_main(Strategy::ZeroShot, &texts, &mut Memo::default())?.variants[0].predicted.clone(), 0.0))
    })?;
    for r in &which {
        measure(format!("retrieval ({r})"), &|| {
            let mut c = cfg.clone();
            c.prompt.retriever = serde_json::from_value(serde_json::Value::String(r.clone()))?;
            let b = Baselines::new(&loaded, &c, &splits.train, opts)?;
            let (b, info) = wick::eval::prepare_retrieval(b, &loaded, &c, batch_size, cache.path())?;
            Ok((b.run_main(Strategy::Retrieval, &texts, &mut Memo::default())?.variants[0].predicted.clone(), info.index_seconds))
        })?;
    }

    println!("first {} {split} examples, pool {:?}, k = {}, main template", texts.len(), pool, cfg.prompt.k_shot);
    if split == "test" {
        println!("test: a description of each retriever; the choice among them is made on dev");
    }
    rows.extend(stored);
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

/// The rows of a `wick compare` report.json as (name, predictions, 0, 0), after checking that it
/// scored the same examples (its gold labels equal `gold`).
fn stored_rows(path: &std::path::Path, gold: &[usize]) -> anyhow::Result<Vec<(String, Vec<usize>, f64, f64)>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let report: wick::report::CompareReport = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if report.header.gold != gold {
        anyhow::bail!("{}: its gold labels are not those of these {} examples; pass the same split and N", path.display(), gold.len());
    }
    Ok(report.rows.into_iter().map(|r| (format!("report: {}", r.name), r.predicted, 0.0, 0.0)).collect())
}
