//! The `wick` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

mod cli;
mod logging;

/// Prompt or fine-tune? wick measures both on your data and model.
#[derive(Parser)]
#[command(name = "wick", version, about, long_about = None)]
struct Cli {
    /// Fail instead of falling back when a fused kernel differs from candle's composite ops on
    /// its first-use check (for CI on a GPU).
    #[arg(long, global = true)]
    strict_kernels: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Propose a working config from a data file alone: format, columns, labels, label words, prompt.
    Init(InitArgs),
    /// Inspect the labelled data set of a config.
    #[command(subcommand)]
    Data(DataCommand),
    /// Inspect or export a model (GGUF file, HF folder or hub id).
    #[command(subcommand)]
    Model(ModelCommand),
    /// Train a LoRA adapter as the config says (resumable).
    Train(TrainArgs),
    /// Score prompt-only strategies on the frozen model (zero-shot, few-shot, calibrated, retrieval, chain-of-thought).
    Baseline(cli::BaselineArgs),
    /// Metrics of a trained checkpoint on a split or any data file.
    Eval(cli::EvalArgs),
    /// Label and probability for texts, from a checkpoint or a prompt strategy.
    Predict(cli::PredictArgs),
    /// Write the base model with a checkpoint's adapter merged in: HF folder or GGUF file.
    Export(cli::ExportArgs),
    /// Prompt or fine-tune? Measure both on the config's data and write the decision report.
    Compare(CompareArgs),
    /// List the recorded runs (checkpoints/runs.jsonl) and the prompt plateau check.
    Runs {
        /// Run config (its output.dir holds runs.jsonl).
        config: PathBuf,
    },
    /// Training and eval throughput on a fixed batch, with the GEMM ceiling (see scripts/bench).
    Bench(cli::BenchArgs),
    /// Check a device against the CPU with no model file: every fused kernel, a few LoRA training
    /// steps of a seeded random model of the real architecture, and throughput (scripts/gpu-pack).
    Selftest(cli::SelftestArgs),
    /// Validate a config file and print it with every default filled in.
    Config {
        /// Path to the TOML run config.
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Counts, lengths, duplicates, conflicts, short texts, unknown labels and imbalance per split.
    Check {
        /// Path to the TOML run config.
        config: PathBuf,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Exit non-zero when any problem is found.
        #[arg(long)]
        strict: bool,
    },
    /// Write the config's train/dev/test splits as OUT/{train,dev,test}.jsonl ({"text", "label"}).
    Split {
        /// Path to the TOML run config.
        config: PathBuf,
        /// Output folder.
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Architecture, parameter counts, dtype, vocabulary and special tokens.
    Info {
        /// GGUF file, HF folder, or hub id `org/name[@rev][:file.gguf]`.
        source: String,
    },
    /// Write an HF folder (config.json, model.safetensors, tokenizer.json) with wick's exact weights.
    Export {
        /// GGUF file, HF folder, or hub id.
        source: String,
        /// Output folder.
        dir: PathBuf,
    },
}

/// Arguments of `wick compare`.
#[derive(Args)]
struct CompareArgs {
    /// Run config; its `[compare]` section says what to measure. A data file instead (any
    /// extension but .toml) runs the config `wick init` proposes for it, written next to the report.
    config: PathBuf,
    /// Override `compare.limit` (examples of the split; 0 = all). The report says it is partial.
    #[arg(long)]
    limit: Option<usize>,
    /// Measure everything again instead of reusing stored results.
    #[arg(long)]
    fresh: bool,
    /// A first look in about ten minutes: 150 test and 100 dev examples, consistency on 20, 2.5
    /// minutes of training, no learning curve, no tuned + retrieval row. The report is marked as a
    /// quick look.
    #[arg(long)]
    quick: bool,
}

#[derive(Args)]
struct InitArgs {
    /// The labelled data file (CSV, TSV, JSON, JSONL, prompt/completion or OpenAI chat; .bz2/.gz too).
    data: PathBuf,
    /// Where to write the config (default: configs/<file name>.toml).
    #[arg(long, value_name = "CONFIG")]
    out: Option<PathBuf>,
    /// The model whose tokenizer checks the label words (GGUF file, HF folder or hub id).
    #[arg(long, value_name = "SOURCE", default_value = wick::init::DEFAULT_MODEL)]
    model: String,
    /// The column holding the text (default: the longest free-text column).
    #[arg(long, value_name = "C")]
    text_column: Option<String>,
    /// The column holding the label (default: the column with few distinct values).
    #[arg(long, value_name = "C")]
    label_column: Option<String>,
    /// A column whose rows must stay in one split (default: one whose values repeat, if only one does).
    #[arg(long, value_name = "C")]
    group_column: Option<String>,
    /// Overwrite an existing config.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// Path to the TOML run config.
    config: PathBuf,
    /// Continue from the run's latest checkpoint, or from the given checkpoint folder.
    #[arg(long, num_args = 0..=1, value_name = "DIR")]
    resume: Option<Option<PathBuf>>,
    /// Train on only the first N examples of the train split.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Override train.max_steps.
    #[arg(long)]
    max_steps: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let process_start = std::time::Instant::now();
    wick::ops::blas::configure_blas();
    wick::ops::keep_freed_memory();
    logging::init();
    let cli = Cli::parse();
    wick::ops::self_check::set_strict(cli.strict_kernels);
    match run(cli, process_start) {
        Ok(code) => code,
        Err(e) => {
            // One line: candle appends a backtrace to its errors when RUST_BACKTRACE is set.
            let msg = format!("{e:#}");
            eprintln!("error: {}", msg.lines().next().unwrap_or("").trim_end_matches(['(', ' ']));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, process_start: std::time::Instant) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(args) => init(&args)?,
        Command::Config { config } => {
            let cfg = wick::data::load_config(&config)?;
            print!("{}", toml::to_string_pretty(&cfg)?);
        }
        Command::Data(DataCommand::Check { config, json, strict }) => {
            let cfg = wick::data::load_config(&config)?;
            let tokenizer = wick::model::tokenizer_for(&cfg.model.source).ok();
            let report = wick::data::check(&cfg.data, tokenizer.as_ref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", report.render_table());
            }
            let problems = report.problems();
            if strict && !problems.is_empty() {
                eprintln!("error: {} data problem(s) found (--strict)", problems.len());
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Data(DataCommand::Split { config, out }) => {
            let cfg = wick::data::load_config(&config)?;
            let (splits, _) = wick::data::load_splits(&cfg.data, wick::data::ReadMode::Strict)?;
            for (path, (name, examples)) in wick::data::write_splits(&splits, &cfg.data.labels, &out)?.iter().zip(splits.named()) {
                println!("wrote {} ({} {name} examples)", path.display(), examples.len());
            }
        }
        Command::Model(ModelCommand::Info { source }) => {
            let loaded = wick::model::load(&source, candle_core::DType::F32, &candle_core::Device::Cpu)?;
            print!("{}", wick::model::describe(&loaded));
        }
        Command::Model(ModelCommand::Export { source, dir }) => {
            let loaded = wick::model::load(&source, candle_core::DType::F32, &candle_core::Device::Cpu)?;
            let format = wick::export::ExportFormat::Hf;
            wick::export::export_merged(&loaded, None, &dir, format, candle_core::DType::F32)?;
            println!("wrote {} (config.json, model.safetensors, tokenizer.json, tokenizer_config.json)", dir.display());
        }
        Command::Compare(args) => {
            let started = std::time::Instant::now();
            let (mut cfg, written) = wick::compare::load_config_or_data(&args.config, args.quick)?;
            if let Some(path) = written {
                println!(
                    "wick compare: {} is a data file, so this runs the config `wick init` proposes for it, written to {} (edit it and pass it instead)",
                    args.config.display(),
                    path.display()
                );
            }
            if args.quick {
                wick::compare::quick_look(&mut cfg);
            }
            let opts = wick::compare::CompareOptions { limit: args.limit, fresh: args.fresh, quick: args.quick, started: Some(started) };
            let (report, paths) = wick::compare::run_compare(&cfg, &opts)?;
            println!("{}", wick::report::render_terminal(&report));
            println!("wrote {} and {} ({:.0}s)", paths.json.display(), paths.html.display(), started.elapsed().as_secs_f64());
        }
        Command::Export(args) => print!("{}", wick::export::run_export(&args.into())?.summary),
        Command::Runs { config } => {
            let cfg = wick::data::load_config(&config)?;
            let records = wick::runs::read_all(&cfg.output.dir)?;
            println!("{}", wick::runs::render_runs(&records));
            if let Some(p) = wick::runs::plateau(&records, cfg.decision.plateau_points) {
                let verdict = if p.plateaued { "plateau: consider fine-tuning" } else { "still improving" };
                println!("{} vs {}: {:+.1} points (threshold {:.1}) — {verdict}", p.last, p.previous, p.improvement_points, p.threshold);
            }
        }
        Command::Bench(args) => {
            let json = args.json;
            let report = wick::bench::run_bench(&args.into(), process_start)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.render());
            }
        }
        Command::Selftest(args) => {
            let report = wick::selftest::run_selftest(&args.into())?;
            print!("{}", report.render_lines());
            println!("{}", serde_json::to_string(&report)?);
            if !report.passed {
                eprintln!(
                    "error: {} of {} selftest checks failed",
                    report.checks.iter().filter(|c| !c.passed).count(),
                    report.checks.len()
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Baseline(args) => print!("{}", wick::eval::run_baseline(&args.into())?.summary),
        Command::Eval(args) => print!("{}", wick::eval::run_eval(&args.into())?.summary),
        Command::Predict(args) => print!("{}", wick::eval::run_predict(&args.into())?),
        Command::Train(args) => {
            let mut cfg = wick::data::load_config(&args.config)?;
            if let Some(n) = args.max_steps {
                cfg.train.max_steps = n;
            }
            let opts = wick::train::TrainOptions {
                resume: args.resume,
                train_limit: args.train_limit,
                quiet: args.quiet,
                skip_initial_eval: false,
                max_minutes: None,
            };
            let summary = wick::train::train(&cfg, &opts).context("train")?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            if summary.interrupted {
                return Ok(ExitCode::from(130));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `wick init`: propose, write, check, and say what to run next.
fn init(args: &InitArgs) -> anyhow::Result<()> {
    let opts = wick::init::InitOptions {
        data: args.data.clone(),
        model: args.model.clone(),
        text_column: args.text_column.clone(),
        label_column: args.label_column.clone(),
        group_column: args.group_column.clone(),
    };
    let out = args.out.clone().unwrap_or_else(|| wick::init::default_config_path(&args.data));
    // Refuse an existing config before any reading, so a mistaken command costs nothing.
    wick::init::check_writable(&out, args.force)?;
    let p = wick::init::propose(&opts)?;
    println!("{}", p.reasons.join("\n"));
    let labels: Vec<String> = p.labels.iter().map(|l| format!("{} ({})", l.label, l.count)).collect();
    println!("labels: {}", labels.join(", "));
    for w in &p.label_words {
        let note = w.note.as_deref().map_or(String::new(), |n| format!(" - {n}"));
        println!("label word: {} -> {:?} ({} token{}){note}", w.label, w.word, w.tokens, if w.tokens == 1 { "" } else { "s" });
    }
    for warning in &p.warnings {
        println!("warning: {warning}");
    }
    wick::init::write_config(&out, &p.toml, args.force)?;
    println!("wrote {}", out.display());
    let cfg = wick::data::load_config(&out)?;
    let tokenizer = wick::model::tokenizer_for(&cfg.model.source).ok();
    let report = wick::data::check(&cfg.data, tokenizer.as_ref())?;
    println!("\n{}", report.render_table());
    println!("next: wick compare {} --quick   (a first look in about ten minutes)", out.display());
    println!("      wick compare {}           (the full comparison, compare.max_minutes = 90)", out.display());
    Ok(())
}
