//! Prompt-only strategies, eval and their error paths, on the real SmolLM2-135M-Instruct GGUF
//! (few examples each: a forward pass is slow on CPU).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use wick::baseline::{BaselineOptions, Baselines, Strategy, calibrate, demo_orders, sample_demos};
use wick::checkpoint::{RUN_FILE, RunRecord, save_adapter};
use wick::config::Config;
use wick::data::Example;
use wick::eval::report::parse_label_map;
use wick::eval::{BaselineArgs, DataArgs, EvalArgs, run_baseline, run_eval};
use wick::model::LoadedModel;
use wick::score::{ScoreOptions, score};

const GGUF: &str = "assets/SmolLM2-135M-Instruct.Q4_1.gguf";

const POSITIVE: [&str; 10] = [
    "A warm, funny and moving film.",
    "Brilliant performances and a script that sparkles.",
    "One of the best films of the year.",
    "I loved every minute of it.",
    "A delightful, clever comedy.",
    "Beautifully shot and deeply affecting.",
    "Smart, tender and surprisingly funny.",
    "A triumph of storytelling.",
    "Gripping from start to finish.",
    "An absolute joy to watch.",
];

const NEGATIVE: [&str; 10] = [
    "Dull, lifeless and far too long.",
    "A tedious mess with no redeeming qualities.",
    "The worst film I have seen in years.",
    "I was bored out of my mind.",
    "Clumsy writing and wooden acting.",
    "A complete waste of time.",
    "Painfully unfunny and badly edited.",
    "The plot makes no sense at all.",
    "Flat, predictable and forgettable.",
    "An ugly, joyless slog.",
];

fn load() -> LoadedModel {
    wick::model::load(GGUF, DType::F32, &Device::Cpu).expect("run scripts/fetch-assets first")
}

fn example(text: &str, label: usize, line: usize) -> Example {
    Example { text: text.into(), label, group: None, line }
}

/// Six of each label; the texts scored in tests are the other four of each.
fn train() -> Vec<Example> {
    let pos = POSITIVE[..6].iter().map(|t| (*t, 1));
    let neg = NEGATIVE[..6].iter().map(|t| (*t, 0));
    pos.chain(neg).enumerate().map(|(i, (t, l))| example(t, l, i + 1)).collect()
}

fn config() -> Config {
    let mut cfg = Config::parse("").expect("defaults parse");
    cfg.prompt.variants.truncate(2);
    cfg
}

fn opts() -> BaselineOptions {
    BaselineOptions { batch_size: 8, ..BaselineOptions::default() }
}

#[test]
fn few_shot_sampling_is_deterministic_balanced_and_seeded() {
    // 20 negatives, 10 positives: balance must come from the sampler, not the data.
    let data: Vec<Example> = (0..30).map(|i| example(&format!("text {i}"), usize::from(i >= 20), i)).collect();
    let a = sample_demos(&data, 2, 4, 7).unwrap();
    let b = sample_demos(&data, 2, 4, 7).unwrap();
    assert_eq!(a, b, "same seed, same demonstrations");
    assert_eq!(a.iter().filter(|d| d.label == 1).count(), 2, "{a:?}");
    let odd = sample_demos(&data, 2, 5, 7).unwrap();
    assert_eq!(odd.iter().filter(|d| d.label == 0).count(), 3, "round-robin starts with the first label");
    let other = sample_demos(&data, 2, 4, 8).unwrap();
    assert_ne!(a, other, "another seed draws other demonstrations");
    // A label with fewer examples than its share: the others fill in.
    let scarce: Vec<Example> = (0..10).map(|i| example(&format!("t{i}"), usize::from(i == 9), i)).collect();
    let d = sample_demos(&scarce, 2, 4, 1).unwrap();
    assert_eq!(d.iter().filter(|d| d.label == 1).count(), 1);
    assert_eq!(d.len(), 4);
    // Orders: the first as sampled, the others distinct permutations of the same demonstrations.
    let orders = demo_orders(&a, 3, 7);
    assert_eq!(orders.len(), 3);
    assert_eq!(orders[0], a);
    assert!(orders[1] != orders[0] && orders[2] != orders[0] && orders[2] != orders[1]);
    for o in &orders {
        let mut x: Vec<&str> = o.iter().map(|d| d.text.as_str()).collect();
        let mut y: Vec<&str> = a.iter().map(|d| d.text.as_str()).collect();
        x.sort();
        y.sort();
        assert_eq!(x, y);
    }
    assert_eq!(demo_orders(&a, 3, 7), orders, "orders are deterministic too");
}

#[test]
fn strategy_names_label_maps_and_calibration_math() {
    assert_eq!(Strategy::parse_list("all").unwrap(), Strategy::ALL.to_vec());
    assert_eq!(Strategy::parse_list("few-shot, zero-shot").unwrap(), vec![Strategy::FewShot, Strategy::ZeroShot]);
    let err = Strategy::parse_list("fewshot").unwrap_err().to_string();
    assert!(err.contains("did you mean `few-shot`"), "{err}");
    let labels = vec!["negative".to_string(), "positive".to_string()];
    let map = parse_label_map("1=positive, 0=negative", &labels).unwrap();
    assert_eq!(map.get("1").map(String::as_str), Some("positive"));
    assert!(parse_label_map("1:positive", &labels).unwrap_err().to_string().contains("RAW=LABEL"));
    assert!(parse_label_map("1=good", &labels).unwrap_err().to_string().contains("not one of the labels"));
    // p = (0.8, 0.2), content-free (0.8, 0.2): the bias is removed entirely.
    let c = calibrate(&[0.8, 0.2], &[0.8, 0.2]);
    assert!((c[0] - 0.5).abs() < 1e-6 && (c[1] - 0.5).abs() < 1e-6);
    // (0.6, 0.4) / (0.8, 0.2) = (0.75, 2) -> (0.2727, 0.7273): the prediction flips.
    let c = calibrate(&[0.6, 0.4], &[0.8, 0.2]);
    assert!((c[1] - 2.0 / 2.75).abs() < 1e-6, "{c:?}");
}

#[test]
fn every_strategy_scores_every_template_and_order() -> anyhow::Result<()> {
    let loaded = load();
    let cfg = config();
    let train = train();
    let texts: Vec<String> = [POSITIVE[6], NEGATIVE[6], POSITIVE[7], train[8].text.as_str()].map(String::from).to_vec();
    let b = Baselines::new(&loaded, &cfg, &train, opts())?;
    let runs = b.run(&Strategy::ALL, &texts)?;
    let templates = 1 + cfg.prompt.variants.len();
    for run in &runs {
        assert_eq!(run.variants.len(), templates, "{}", run.strategy);
        for v in &run.variants {
            assert_eq!(v.probs.len(), texts.len());
            for p in &v.probs {
                assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{} {}: {p:?}", run.strategy, v.name);
            }
        }
        let expect_orders = if run.strategy == Strategy::FewShot { 3 } else { 0 };
        assert_eq!(run.orders.len(), expect_orders, "{}", run.strategy);
    }
    // Chain-of-thought keeps its reasoning and output tokens for every example and template.
    let cot = &runs[4];
    assert_eq!(cot.strategy, Strategy::Cot);
    for v in &cot.variants {
        assert_eq!((v.reasoning.len(), v.output_tokens.len()), (texts.len(), texts.len()));
        assert!(v.output_tokens.iter().all(|&t| (1..=cfg.prompt.cot_max_tokens + 1).contains(&t)), "{:?}", v.output_tokens);
    }
    let [zero, few, cal, retrieval] = [&runs[0], &runs[1], &runs[2], &runs[3]];
    // Zero-shot is the label-word distribution of the bare template, scored without the cache.
    let prompter = &b.prompters()[0].1;
    let prompts: Vec<_> = texts.iter().map(|t| prompter.tokens(t, &[])).collect::<Result<_, _>>()?;
    let direct =
        score(&loaded.model, prompter.label_tokens(), &prompts, ScoreOptions { batch_size: 1, max_len: usize::MAX, prefix_cache: false })?;
    for (d, p) in direct.iter().zip(&zero.variants[0].probs) {
        assert!(d.label_probs().iter().zip(p).all(|(a, b)| (a - b).abs() < 1e-4), "{:?} vs {p:?}", d.label_probs());
    }
    // Few-shot: four balanced demonstrations, longer prompts than zero-shot.
    assert_eq!(few.demos.len(), cfg.prompt.k_shot);
    assert_eq!(few.demos.iter().filter(|d| d.label == 1).count(), cfg.prompt.k_shot / 2);
    assert!(few.variants[0].prompt_tokens[0] > zero.variants[0].prompt_tokens[0] + 20);
    // Calibrated = zero-shot divided by the content-free distribution of the same template.
    assert_eq!(cal.content_free.len(), templates);
    for (v, p_cf) in cal.variants.iter().zip(&cal.content_free) {
        let raw = &zero.variants.iter().find(|z| z.name == v.name).unwrap().probs;
        for (c, r) in v.probs.iter().zip(raw) {
            assert!(calibrate(r, p_cf).iter().zip(c).all(|(a, b)| (a - b).abs() < 1e-6));
        }
    }
    // Retrieval: a train text's nearest neighbour is itself, shown last (closest to the question).
    let (demos, ms) = b.neighbours(&texts)?;
    assert_eq!(demos[3].len(), cfg.prompt.k_shot);
    assert_eq!(demos[3].last().unwrap().text, texts[3]);
    assert!(ms.iter().all(|&m| m > 0.0));
    assert!(retrieval.variants[0].prompt_tokens[3] > zero.variants[0].prompt_tokens[3] + 20);
    assert_eq!(retrieval.neighbour_labels[3].last(), Some(&0), "its own (negative) label");
    // The BM25 retriever finds the same text by its words, and the strategy runs on it.
    let mut lexical = cfg.clone();
    lexical.prompt.retriever = wick::config::Retriever::Bm25;
    let b = Baselines::new(&loaded, &lexical, &train, opts())?;
    let (demos, _) = b.neighbours(&texts)?;
    assert!(demos.iter().all(|d| d.len() == cfg.prompt.k_shot));
    assert_eq!(demos[3].last().unwrap().text, texts[3]);
    let run = b.run(&[Strategy::Retrieval], &texts)?;
    assert_eq!(run[0].neighbour_labels[3].last(), Some(&0));
    Ok(())
}

#[test]
fn cached_prefix_few_shot_equals_uncached() -> anyhow::Result<()> {
    let loaded = load();
    let cfg = config();
    let train = train();
    let b = Baselines::new(&loaded, &cfg, &train, opts())?;
    let texts: Vec<String> = POSITIVE[6..9].iter().chain(&NEGATIVE[6..9]).map(|s| s.to_string()).collect();
    let check = b.cache_check(Strategy::FewShot, &texts)?.expect("few-shot has a shared prefix");
    assert_eq!(check.examples, texts.len());
    assert!(check.prefix_tokens > 150, "the four demonstrations are in the cached prefix: {}", check.prefix_tokens);
    assert!(check.max_abs_diff < 1e-4, "cached vs uncached: {}", check.max_abs_diff);
    assert!(b.cache_check(Strategy::Retrieval, &texts)?.is_none(), "retrieval prefixes differ per example");
    Ok(())
}

#[test]
fn calibration_moves_a_biased_prompt_toward_balance() -> anyhow::Result<()> {
    let loaded = load();
    let mut cfg = config();
    cfg.prompt.template = "positive positive positive positive positive positive\nReview: {text}\nAnswer with one word.".into();
    cfg.prompt.variants.clear();
    let b = Baselines::new(&loaded, &cfg, &[], opts())?;
    let texts: Vec<String> = POSITIVE.iter().chain(&NEGATIVE).map(|s| s.to_string()).collect();
    let gold: Vec<usize> = (0..20).map(|i| usize::from(i < 10)).collect();
    let runs = b.run(&[Strategy::ZeroShot, Strategy::Calibrated], &texts)?;
    let majority = |pred: &[usize]| {
        let pos = pred.iter().filter(|&&p| p == 1).count();
        pos.max(pred.len() - pos) as f64 / pred.len() as f64
    };
    let accuracy = |pred: &[usize]| pred.iter().zip(&gold).filter(|(a, b)| a == b).count() as f64 / 20.0;
    let (before, after) = (&runs[0].variants[0].predicted, &runs[1].variants[0].predicted);
    println!("majority share {} -> {}, accuracy {} -> {}", majority(before), majority(after), accuracy(before), accuracy(after));
    assert!(majority(before) >= 0.9, "the primed template should be biased: {before:?}");
    assert!(majority(after) < majority(before) - 0.1, "calibration should rebalance: {after:?}");
    assert!(accuracy(after) > accuracy(before));
    assert!(runs[1].content_free[0][1] > 0.5, "the content-free inputs expose the bias: {:?}", runs[1].content_free);
    Ok(())
}

#[test]
fn bad_prompt_settings_are_one_clear_error() {
    let loaded = load();
    let train = train();
    let mut cfg = config();
    cfg.prompt.k_shot = 50;
    let b = Baselines::new(&loaded, &cfg, &train, opts()).unwrap();
    let err = b.check(&[Strategy::FewShot]).unwrap_err().to_string();
    assert!(err.contains("k_shot = 50") && err.contains("only 12"), "{err}");
    assert!(b.run(&[Strategy::Retrieval], &["x".to_string()]).is_err());
    assert!(b.check(&[Strategy::ZeroShot]).is_ok(), "zero-shot needs no demonstrations");

    let mut cfg = config();
    cfg.prompt.template = "Is this review positive?".into();
    let err = Baselines::new(&loaded, &cfg, &train, opts()).err().expect("template without {text}").to_string();
    assert!(err.contains("{text}"), "{err}");
    let mut cfg = config();
    cfg.prompt.variants.push("No slot here.".into());
    let err = Baselines::new(&loaded, &cfg, &train, opts()).err().expect("variant without {text}").to_string();
    assert!(err.contains("variant 3") && err.contains("{text}"), "{err}");
    let mut cfg = config();
    cfg.prompt.label_words.insert("positive".into(), String::new());
    let err = Baselines::new(&loaded, &cfg, &train, opts()).err().expect("empty label word").to_string();
    assert!(err.contains("label_words.positive") && err.contains("tokenizes to nothing"), "{err}");
}

/// Split files and a config writing under `dir`; returns the config path.
fn write_run(dir: &Path, extra: &str) -> PathBuf {
    let csv = |name: &str, rows: &[(&str, &str)]| {
        let mut s = String::from("text,label\n");
        for (t, l) in rows {
            s.push_str(&format!("\"{t}\",{l}\n"));
        }
        std::fs::write(dir.join(name), s).unwrap();
    };
    let train: Vec<(&str, &str)> =
        POSITIVE[..6].iter().map(|t| (*t, "fresh")).chain(NEGATIVE[..6].iter().map(|t| (*t, "rotten"))).collect();
    csv("train.csv", &train);
    csv("dev.csv", &[(POSITIVE[6], "fresh"), (NEGATIVE[6], "rotten")]);
    csv("test.csv", &[(POSITIVE[7], "fresh"), (NEGATIVE[7], "rotten"), (POSITIVE[8], "fresh"), (NEGATIVE[8], "rotten")]);
    let p = |n: &str| dir.join(n).display().to_string();
    let text = format!(
        "[model]\nsource = \"{}\"\n[data]\ntrain_path = \"{}\"\ndev_path = \"{}\"\ntest_path = \"{}\"\nlabel_map = {{ fresh = \"positive\", rotten = \"negative\" }}\n\
         [prompt]\nvariants = [\"Review: {{text}}\\nPositive or negative?\"]\n{extra}\n[output]\ndir = \"{}\"\nrun_name = \"t\"\n",
        std::fs::canonicalize(GGUF).unwrap().display(),
        p("train.csv"),
        p("dev.csv"),
        p("test.csv"),
        p("out"),
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn baseline_args(config: PathBuf, strategy: &str) -> BaselineArgs {
    BaselineArgs {
        config,
        strategy: strategy.into(),
        split: "test".into(),
        data_args: DataArgs::default(),
        limit: None,
        batch_size: 4,
        calibrate_on: "zero-shot".into(),
        retrieval_pool: None,
        skip_cache_check: false,
        search: false,
    }
}

#[test]
fn baseline_command_writes_metrics_and_predictions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = write_run(dir.path(), "");
    run_baseline(&baseline_args(config.clone(), "zero-shot,calibrated"))?;
    let out = dir.path().join("out/t/baseline");
    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("zero-shot/test/metrics.json"))?)?;
    assert_eq!(metrics["n"], 4);
    assert_eq!(metrics["templates"].as_array().map(Vec::len), Some(2));
    assert!(metrics["consistency"]["agreement"].as_f64().is_some());
    assert!(metrics["prefix_cache"]["max_abs_diff"].as_f64().unwrap() < 1e-4);
    assert!(metrics["metrics"]["confusion"].is_array());
    let cal: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("calibrated/test/metrics.json"))?)?;
    assert_eq!(cal["calibration"]["content_free_inputs"], serde_json::json!(["N/A", "", "[MASK]"]));
    let lines = std::fs::read_to_string(out.join("zero-shot/test/predictions.jsonl"))?;
    assert_eq!(lines.lines().count(), 4);
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap())?;
    assert_eq!(first["gold"], "positive");
    let p = first["probabilities"]["positive"].as_f64().unwrap() + first["probabilities"]["negative"].as_f64().unwrap();
    assert!((p - 1.0).abs() < 1e-5);

    // Any data file: a JSON array with `class` 0/1 needs the column and the label map.
    let ood = dir.path().join("ood.json");
    std::fs::write(&ood, r#"[{"text": "Great fun.", "class": 1}, {"text": "Awful.", "class": 0}, {"text": "", "class": null}]"#)?;
    let mut args = baseline_args(config.clone(), "zero-shot");
    args.data_args = DataArgs { data: Some(ood.clone()), ..DataArgs::default() };
    let err = run_baseline(&args).unwrap_err().to_string();
    assert!(err.contains("--label-column"), "{err}");
    args.data_args.label_column = Some("class".into());
    args.data_args.label_map = Some("1=positive,0=negative".into());
    run_baseline(&args)?;
    assert!(out.join("zero-shot/ood/metrics.json").exists());

    // k larger than the train split fails before anything is scored.
    let config = write_run(dir.path(), "k_shot = 40");
    let err = run_baseline(&baseline_args(config, "few-shot")).unwrap_err().to_string();
    assert!(err.contains("k_shot = 40") && err.contains("only 12"), "{err}");
    Ok(())
}

#[test]
fn eval_scores_checkpoints_and_refuses_another_base() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = write_run(dir.path(), "");
    let mut cfg = wick::data::load_config(&config)?;
    let mut loaded = load();
    let fingerprint = loaded.model.fingerprint().to_string();
    // A fresh adapter (B = 0) leaves the model unchanged, so eval must equal zero-shot.
    loaded.model.add_lora(&["all-linear".into()], 4, 8.0, 0.0, 1)?;
    let ckpt = dir.path().join("out/t/step-3");
    save_adapter(&ckpt, &loaded.model, None, &cfg, &fingerprint)?;
    run_eval(&EvalArgs {
        checkpoint: ckpt.clone(),
        split: "test".into(),
        data_args: DataArgs::default(),
        config: None,
        limit: None,
        batch_size: 4,
        main_template_only: false,
        skip_cache_check: false,
        strategy: None,
        retrieval_pool: None,
        dtype: None,
    })?;
    run_baseline(&baseline_args(config.clone(), "zero-shot"))?;
    let read = |p: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(dir.path().join(p)).unwrap()).unwrap() };
    let eval = read("out/t/eval/step-3/test/metrics.json");
    let zero = read("out/t/baseline/zero-shot/test/metrics.json");
    assert_eq!(eval["method"], "verbalizer");
    assert_eq!(eval["metrics"]["confusion"], zero["metrics"]["confusion"]);
    assert_eq!(eval["consistency"]["agreement"], zero["consistency"]["agreement"]);

    // A linear head: eval reports it as such and writes one prediction per example.
    cfg.train.head = wick::config::HeadKind::Linear;
    let head = Tensor::randn(0f32, 0.05, (2, loaded.model.cfg.hidden_size), &Device::Cpu)?;
    let linear = dir.path().join("out/t/step-4");
    save_adapter(&linear, &loaded.model, Some(&head), &cfg, &fingerprint)?;
    run_eval(&EvalArgs {
        checkpoint: linear,
        split: "test".into(),
        data_args: DataArgs::default(),
        config: None,
        limit: Some(3),
        batch_size: 4,
        main_template_only: false,
        skip_cache_check: false,
        strategy: None,
        retrieval_pool: None,
        dtype: None,
    })?;
    let eval = read("out/t/eval/step-4/test/metrics.json");
    assert_eq!(eval["method"], "linear");
    assert_eq!(eval["n"], 3);

    // The same checkpoint claiming another base model is refused with one line.
    let run: RunRecord = toml::from_str(&std::fs::read_to_string(ckpt.join(RUN_FILE))?)?;
    let fake = RunRecord { base_fingerprint: "0".repeat(64), config: run.config };
    std::fs::write(ckpt.join(RUN_FILE), toml::to_string(&fake)?)?;
    let err = run_eval(&EvalArgs {
        checkpoint: ckpt,
        split: "test".into(),
        data_args: DataArgs::default(),
        config: None,
        limit: None,
        batch_size: 4,
        main_template_only: false,
        skip_cache_check: false,
        strategy: None,
        retrieval_pool: None,
        dtype: None,
    })
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("another base model") && !msg.contains('\n'), "{msg}");
    Ok(())
}
