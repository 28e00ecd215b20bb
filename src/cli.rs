//! The argument structs of `wick baseline`, `eval`, `predict`, `export`, `bench` and `selftest` as
//! clap parses them, and their conversion into the library's plain request types: the library
//! never sees clap.

use std::path::PathBuf;

use clap::Args;

/// `wick baseline`: score prompt-only strategies with the frozen base model.
#[derive(Debug, Clone, Args)]
pub struct BaselineArgs {
    /// Path to the TOML run config.
    pub config: PathBuf,
    /// "all", or a comma-separated list of zero-shot, few-shot, calibrated, retrieval, cot; or
    /// "searched", the prompt a search stored (`--search`, `wick compare`).
    #[arg(long, default_value = "all")]
    pub strategy: String,
    /// Split to score: train, dev or test.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// A data file to score instead of the split.
    #[command(flatten)]
    pub data_args: DataArgs,
    /// Score only N examples (the first N of a split; a seeded sample of N from a --data file).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// What `calibrated` calibrates: zero-shot or few-shot.
    #[arg(long, default_value = "zero-shot")]
    pub calibrate_on: String,
    /// Retrieve from a seeded sample of N train examples (default: the config's
    /// compare.retrieval_pool, as the compare report does; 0: the whole train split).
    #[arg(long, value_name = "N")]
    pub retrieval_pool: Option<usize>,
    /// Skip the prefix-cache self-check (it scores the first 16 examples again without the cache).
    #[arg(long)]
    pub skip_cache_check: bool,
    /// Search the prompt on dev first (instructions, label words, calibration, demonstrations;
    /// within compare.search_minutes), keep it in <run_dir>/search/prompt.toml, and score it.
    #[arg(long)]
    pub search: bool,
}

impl From<BaselineArgs> for wick::eval::BaselineArgs {
    fn from(a: BaselineArgs) -> Self {
        Self {
            config: a.config,
            strategy: a.strategy,
            split: a.split,
            data_args: a.data_args.into(),
            limit: a.limit,
            batch_size: a.batch_size,
            calibrate_on: a.calibrate_on,
            retrieval_pool: a.retrieval_pool,
            skip_cache_check: a.skip_cache_check,
            search: a.search,
        }
    }
}

/// `wick eval`: score a LoRA checkpoint (verbalizer or linear head).
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// A checkpoint folder (wick's, or any HF PEFT LoRA folder), a run folder whose `best` file
    /// names one, or a hub id `org/name[@rev]` of a PEFT adapter.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Split to score: train, dev or test.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// A data file to score instead of the split.
    #[command(flatten)]
    pub data_args: DataArgs,
    /// Run config: for a wick checkpoint its [data] and [output] sections replace the checkpoint's;
    /// for an adapter written by Python PEFT it gives the model, prompt and labels too.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Score only N examples (the first N of a split; a seeded sample of N from a --data file).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Score only the main template (no consistency across templates; one pass instead of four).
    #[arg(long)]
    pub main_template_only: bool,
    /// Skip the prefix-cache self-check (it scores the first 16 examples again without the cache).
    #[arg(long)]
    pub skip_cache_check: bool,
    /// Prompt the tuned model with a strategy (few-shot, calibrated, retrieval, cot, or searched:
    /// the prompt the search stored) and the same
    /// demonstrations as the base-model run (retrieval: the base model's neighbours).
    #[arg(long)]
    pub strategy: Option<String>,
    /// With --strategy retrieval: retrieve from a seeded sample of N train examples (default: the
    /// config's compare.retrieval_pool; 0: the whole train split).
    #[arg(long, value_name = "N", requires = "strategy")]
    pub retrieval_pool: Option<usize>,
    /// Compute dtype of the base model, instead of the checkpoint's model.dtype: f32, bf16 (the
    /// CPU's oneDNN path), f16 or auto. The checkpoint's fingerprint is of the unrounded weights,
    /// so an adapter trained in f32 is scored on the bf16 path as it is.
    #[arg(long)]
    pub dtype: Option<String>,
}

impl From<EvalArgs> for wick::eval::EvalArgs {
    fn from(a: EvalArgs) -> Self {
        Self {
            checkpoint: a.checkpoint,
            split: a.split,
            data_args: a.data_args.into(),
            config: a.config,
            limit: a.limit,
            batch_size: a.batch_size,
            main_template_only: a.main_template_only,
            skip_cache_check: a.skip_cache_check,
            strategy: a.strategy,
            retrieval_pool: a.retrieval_pool,
            dtype: a.dtype,
        }
    }
}

/// `wick predict`: label texts with a checkpoint or a prompt-only strategy.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// A checkpoint folder (wick's or PEFT's), a run folder with a `best` file, or a PEFT adapter's hub id.
    #[arg(long, value_name = "DIR", conflicts_with = "strategy", required_unless_present = "strategy")]
    pub checkpoint: Option<PathBuf>,
    /// A prompt-only strategy on the base model (zero-shot, few-shot, calibrated, retrieval, cot, or
    /// searched: the prompt a search stored); needs --config.
    #[arg(long, requires = "config")]
    pub strategy: Option<String>,
    /// Run config: for --strategy, and for a --checkpoint that Python PEFT wrote.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A file with one text per line.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// What `calibrated` calibrates: zero-shot or few-shot.
    #[arg(long, default_value = "zero-shot")]
    pub calibrate_on: String,
    /// Retrieve from a seeded sample of N train examples (default: the config's
    /// compare.retrieval_pool, as the compare report does; 0: the whole train split).
    #[arg(long, value_name = "N")]
    pub retrieval_pool: Option<usize>,
    /// Texts to label.
    pub texts: Vec<String>,
}

impl From<PredictArgs> for wick::eval::PredictArgs {
    fn from(a: PredictArgs) -> Self {
        Self {
            checkpoint: a.checkpoint,
            strategy: a.strategy,
            config: a.config,
            input: a.input,
            batch_size: a.batch_size,
            calibrate_on: a.calibrate_on,
            retrieval_pool: a.retrieval_pool,
            texts: a.texts,
        }
    }
}

/// Where the examples to score come from, and how to read a `--data` file.
#[derive(Debug, Clone, Default, Args)]
pub struct DataArgs {
    /// Score this data file (CSV, TSV, JSONL, JSON; optionally .bz2/.gz) instead of a split.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Column (or JSON key) of the text in --data (default: `text`, else the config's).
    #[arg(long)]
    pub text_column: Option<String>,
    /// Column (or JSON key) of the label in --data (default: `label`, else the config's).
    #[arg(long)]
    pub label_column: Option<String>,
    /// Raw label value -> label name for --data, e.g. "1=positive,0=negative".
    #[arg(long, value_name = "MAP")]
    pub label_map: Option<String>,
}

impl From<DataArgs> for wick::eval::DataArgs {
    fn from(a: DataArgs) -> Self {
        Self { data: a.data, text_column: a.text_column, label_column: a.label_column, label_map: a.label_map }
    }
}

/// `wick export`: the base model with a checkpoint's adapter merged in.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// A checkpoint folder (wick's or any HF PEFT LoRA folder), a run folder with a `best` file, or a PEFT adapter's hub id.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Output: a folder (hf, gguf) or a `.gguf` file path (gguf).
    pub out: PathBuf,
    /// hf (transformers folder) or gguf (llama.cpp).
    #[arg(long, default_value = "hf")]
    pub format: String,
    /// Weight dtype of the written model: f32 or f16 (the merge itself is done in f32).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Run config: needed for an adapter written by Python PEFT (base model and labels).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Dev examples on which the merged model, read back, must give the adapter's answers
    /// (99.5% of them in f32, 99% in f16; 0: no check).
    #[arg(long, default_value_t = wick::export::check::CHECK_EXAMPLES, value_name = "N")]
    pub check_examples: usize,
}

impl From<ExportArgs> for wick::export::ExportArgs {
    fn from(a: ExportArgs) -> Self {
        Self { checkpoint: a.checkpoint, out: a.out, format: a.format, dtype: a.dtype, config: a.config, check_examples: a.check_examples }
    }
}

/// Arguments of `wick bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Run config (model source, dtype, LoRA r / alpha / targets).
    pub config: PathBuf,
    /// Rows per batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Tokens per row (no padding).
    #[arg(long, default_value_t = 64)]
    pub seq: usize,
    /// Timed steps (after the warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Override the config's dtype ("f32", "f16", "bf16").
    #[arg(long)]
    pub dtype: Option<String>,
    /// Use the composite reference ops instead of the fused ones (to measure what fusing buys).
    #[arg(long)]
    pub reference_ops: bool,
    /// Re-run each layer in the backward instead of keeping its activations.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Train the layers under candle's autograd instead of their hand-written backward (to
    /// measure what it buys).
    #[arg(long)]
    pub autograd_layers: bool,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl From<BenchArgs> for wick::bench::BenchArgs {
    fn from(a: BenchArgs) -> Self {
        Self {
            config: a.config,
            batch: a.batch,
            seq: a.seq,
            steps: a.steps,
            dtype: a.dtype,
            reference_ops: a.reference_ops,
            gradient_checkpointing: a.gradient_checkpointing,
            autograd_layers: a.autograd_layers,
            json: a.json,
        }
    }
}

/// Arguments of `wick selftest`.
#[derive(Debug, Clone, Args)]
pub struct SelftestArgs {
    /// Device to check: cpu, cuda:N, or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Architecture of the random model: a GGUF file (only its header is read), an HF folder or a
    /// config.json [default: assets/SmolLM2-135M-Instruct.Q4_1.gguf].
    #[arg(long, conflicts_with = "expected")]
    pub arch: Option<PathBuf>,
    /// CPU figures to hold the training check against (from --write-expected; it holds the
    /// architecture and the setup too).
    #[arg(long)]
    pub expected: Option<PathBuf>,
    /// Write this run's f32 training figures, architecture and setup here (CPU only).
    #[arg(long)]
    pub write_expected: Option<PathBuf>,
    /// Speed sizes as BATCHxSEQ, comma-separated [default: 16x64,64x512 on CUDA, none on the CPU].
    #[arg(long)]
    pub speed_sizes: Option<String>,
    /// Timed steps per speed size.
    #[arg(long, default_value_t = 50)]
    pub speed_steps: usize,
    /// Dense f16 peak of the device, TFLOP/s: MFU is then also given against it.
    #[arg(long)]
    pub peak_tflops: Option<f64>,
}

impl From<SelftestArgs> for wick::selftest::SelftestArgs {
    fn from(a: SelftestArgs) -> Self {
        Self {
            device: a.device,
            arch: a.arch,
            expected: a.expected,
            write_expected: a.write_expected,
            speed_sizes: a.speed_sizes,
            speed_steps: a.speed_steps,
            peak_tflops: a.peak_tflops,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn command_line_arguments_parse_with_defaults() {
        #[derive(Parser)]
        enum Cli {
            Baseline(BaselineArgs),
            Eval(EvalArgs),
            Predict(PredictArgs),
        }
        let Ok(Cli::Baseline(b)) = Cli::try_parse_from(["wick", "baseline", "cfg.toml", "--limit", "5"]) else { panic!("baseline args") };
        assert_eq!((b.strategy.as_str(), b.split.as_str(), b.batch_size, b.limit), ("all", "test", 16, Some(5)));
        let Ok(Cli::Eval(e)) = Cli::try_parse_from(["wick", "eval", "--checkpoint", "ck", "--data", "x.csv", "--label-map", "1=positive"])
        else {
            panic!("eval args")
        };
        assert_eq!(e.data_args.label_map.as_deref(), Some("1=positive"));
        let Ok(Cli::Predict(p)) = Cli::try_parse_from(["wick", "predict", "--checkpoint", "ck", "great", "awful"]) else {
            panic!("predict args")
        };
        assert_eq!(p.texts, ["great", "awful"]);
        assert!(Cli::try_parse_from(["wick", "predict", "great"]).is_err(), "needs --checkpoint or --strategy");
        assert!(Cli::try_parse_from(["wick", "predict", "--strategy", "zero-shot", "great"]).is_err(), "--strategy needs --config");
        assert!(Cli::try_parse_from(["wick", "predict", "--checkpoint", "ck", "--strategy", "zero-shot", "--config", "c", "x"]).is_err());
    }
}
