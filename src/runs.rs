//! Run history: one JSON line per baseline, train and eval result in `<output.dir>/runs.jsonl`,
//! versioned per family (prompt_v1, prompt_v2, ... and finetune_v1, ...), so `wick runs` can show
//! progress and the seed's plateau rule can say when prompt engineering has stopped paying off.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::PlateauCheck;
use crate::report::format::percent;

/// File name of the run history inside `output.dir`.
pub const RUNS_FILE: &str = "runs.jsonl";

/// One recorded result: a [`NewRun`] with its version and time (flattened into one JSON object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// prompt_vN (baselines) or finetune_vN (train/eval), numbered per family.
    pub version: String,
    /// When it was recorded (RFC 3339, UTC).
    pub timestamp: String,
    /// What was measured.
    #[serde(flatten)]
    pub run: NewRun,
}

/// A result to record; [`append`] gives it its version and timestamp.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewRun {
    /// "baseline", "train" or "eval".
    pub kind: String,
    /// Strategy or checkpoint.
    pub name: String,
    /// Hash of the config that produced it: `prompt_results_hash` for baselines (prompt-side
    /// sections only), `results_hash` otherwise.
    pub config_hash: String,
    /// Split it was measured on.
    pub split: String,
    /// Accuracy on that split.
    pub accuracy: f64,
    /// Macro-F1 on that split.
    pub macro_f1: f64,
    /// Agreement across prompt templates, when measured.
    pub consistency: Option<f64>,
    /// Examples scored.
    pub examples: usize,
    /// Checkpoint or report path, when there is one.
    pub path: Option<String>,
}

/// The version family of a kind: baselines are prompt versions, train and eval are fine-tune versions.
pub fn family(kind: &str) -> &str {
    match kind {
        "baseline" => "prompt",
        "train" | "eval" => "finetune",
        other => other,
    }
}

/// The history file of an output directory.
pub fn runs_path(output_dir: &Path) -> PathBuf {
    output_dir.join(RUNS_FILE)
}

/// Record one result under the next version of its family.
pub fn append(output_dir: &Path, run: NewRun) -> Result<RunRecord> {
    let mut records = append_all(output_dir, vec![run])?;
    Ok(records.remove(0))
}

/// Record the results of one run (e.g. every strategy of one baseline run): results of the same
/// family share one version, so a version's best accuracy is that run's best strategy.
pub fn append_all(output_dir: &Path, runs: Vec<NewRun>) -> Result<Vec<RunRecord>> {
    let existing = read_all(output_dir)?;
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    for r in &existing {
        if let Some(n) = version_number(&r.version) {
            let slot = next.entry(family(&r.run.kind).to_string()).or_insert(1);
            *slot = (*slot).max(n + 1);
        }
    }
    let timestamp = crate::clock::now_rfc3339();
    let records: Vec<RunRecord> = runs
        .into_iter()
        .map(|run| {
            let family = family(&run.kind);
            let n = next.get(family).copied().unwrap_or(1);
            RunRecord { version: format!("{family}_v{n}"), timestamp: timestamp.clone(), run }
        })
        .collect();
    let mut lines = String::new();
    for r in &records {
        let line = serde_json::to_string(r).map_err(|e| Error::Data(format!("run record {}: {e}", r.run.name)))?;
        lines.push_str(&line);
        lines.push('\n');
    }
    std::fs::create_dir_all(output_dir).map_err(|e| Error::io(output_dir, e))?;
    let path = runs_path(output_dir);
    // One write of whole lines in append mode: concurrent runs interleave lines, never halves.
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
    file.write_all(lines.as_bytes()).map_err(|e| Error::io(&path, e))?;
    Ok(records)
}

/// N of "family_vN".
fn version_number(version: &str) -> Option<u64> {
    version.rsplit_once("_v")?.1.parse().ok()
}

/// Every recorded result, oldest first; a missing file is an empty history.
pub fn read_all(output_dir: &Path) -> Result<Vec<RunRecord>> {
    let path = runs_path(output_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| Error::Data(format!("{}:{}: not a run record ({e}); fix or delete that line", path.display(), i + 1)))
        })
        .collect()
}

/// The history as a table for `wick runs`.
pub fn render_runs(records: &[RunRecord]) -> String {
    if records.is_empty() {
        return format!("no runs recorded yet ({RUNS_FILE} is written by baseline, train, eval and compare)");
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["version", "kind", "name", "split", "accuracy", "macro-F1", "consistency", "examples", "config", "when"]);
    let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
    for r in records {
        table.add_row(vec![
            Cell::new(&r.version),
            Cell::new(&r.run.kind),
            Cell::new(&r.run.name),
            Cell::new(&r.run.split),
            right(percent(r.run.accuracy)),
            right(format!("{:.3}", r.run.macro_f1)),
            right(r.run.consistency.map_or_else(|| "-".into(), percent)),
            right(r.run.examples.to_string()),
            Cell::new(r.run.config_hash.chars().take(8).collect::<String>()),
            Cell::new(&r.timestamp),
        ]);
    }
    table.to_string()
}

/// The seed's rule "switch to fine-tuning when the last prompt improvement is below `points`":
/// the best accuracy of the last two prompt versions measured on the latest prompt run's split.
/// Versions just before the last with its config hash are re-runs of the same prompts, not an
/// iteration, so the previous version is the newest one whose config differs.
pub fn plateau(records: &[RunRecord], points: f64) -> Option<PlateauCheck> {
    let prompts: Vec<&RunRecord> = records.iter().filter(|r| family(&r.run.kind) == "prompt").collect();
    let split = &prompts.last()?.run.split;
    let mut best: BTreeMap<u64, (&str, f64, &str)> = BTreeMap::new();
    for r in prompts.iter().filter(|r| &r.run.split == split) {
        let Some(n) = version_number(&r.version) else { continue };
        let entry = best.entry(n).or_insert((&r.version, f64::NEG_INFINITY, &r.run.config_hash));
        entry.1 = entry.1.max(r.run.accuracy);
    }
    let mut newest = best.values().rev();
    let (last, last_acc, last_hash) = *newest.next()?;
    let (previous, previous_acc, _) = *newest.find(|v| v.2 != last_hash)?;
    let improvement_points = (last_acc - previous_acc) * 100.0;
    Some(PlateauCheck {
        last: last.to_string(),
        previous: previous.to_string(),
        improvement_points,
        threshold: points,
        plateaued: improvement_points < points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbered() {
        assert_eq!(version_number("prompt_v12"), Some(12));
        assert_eq!(version_number("prompt"), None);
    }
}
