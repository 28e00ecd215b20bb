//! Deterministic train/dev/test splits that keep groups and duplicate texts together.

use std::collections::HashMap;
use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::{Example, ReadMode, ReadReport, ReadSpec, read_file_with};
use crate::config::DataConfig;
use crate::error::{Error, Result};

/// The three splits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Splits {
    /// Training examples.
    pub train: Vec<Example>,
    /// Development (model selection) examples.
    pub dev: Vec<Example>,
    /// Held-out test examples.
    pub test: Vec<Example>,
}

impl Splits {
    /// The splits with their names, in train, dev, test order.
    pub fn named(&self) -> [(&'static str, &[Example]); 3] {
        [("train", &self.train), ("dev", &self.dev), ("test", &self.test)]
    }

    /// Total number of examples.
    pub fn len(&self) -> usize {
        self.train.len() + self.dev.len() + self.test.len()
    }

    /// True when all three splits are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Write the splits as `dir/{train,dev,test}.jsonl`, one `{"text", "label"}` object per line with
/// the label's name, so the same split can be used elsewhere (🤗 `datasets`' json loader, PEFT
/// scripts) and read back by wick. Each file is written atomically.
pub fn write_splits(splits: &Splits, labels: &[String], dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    for (name, examples) in splits.named() {
        let mut body = String::new();
        for e in examples {
            let row = serde_json::json!({ "text": e.text, "label": labels[e.label] });
            // U+2028/2029 are valid raw in JSON, but line splitters (Python's str.splitlines) break on them.
            body.push_str(&row.to_string().replace('\u{2028}', "\\u2028").replace('\u{2029}', "\\u2029"));
            body.push('\n');
        }
        let path = dir.join(format!("{name}.jsonl"));
        crate::model::load::write_atomic(&path, body.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

/// Read the configured data and split it: explicit split files as given, else one file split
/// by the fractions with `data.seed`.
pub fn load_splits(cfg: &DataConfig, mode: ReadMode) -> Result<(Splits, ReadReport)> {
    let spec = ReadSpec::from_config(cfg)?;
    match (&cfg.train_path, &cfg.dev_path, &cfg.test_path) {
        (Some(train), Some(dev), Some(test)) => {
            let (train, mut report) = read_nonempty(train, &spec, mode)?;
            let (dev, r) = read_file_with(dev, &spec, mode)?;
            report.merge(r);
            let (test, r) = read_file_with(test, &spec, mode)?;
            report.merge(r);
            let splits = Splits { train, dev, test };
            if mode == ReadMode::Strict {
                two_classes_each(&splits, &cfg.labels)?;
            }
            Ok((splits, report))
        }
        (None, None, None) => {
            let path = cfg
                .path
                .as_deref()
                .ok_or_else(|| Error::Config("data.path is missing (or give data.train_path, dev_path and test_path)".into()))?;
            let (examples, report) = read_nonempty(path, &spec, mode)?;
            let fractions = [cfg.train_fraction, cfg.dev_fraction, cfg.test_fraction];
            let splits = split_examples(examples, fractions, cfg.seed);
            for ((name, part), frac) in splits.named().into_iter().zip(fractions) {
                if part.is_empty() && frac > 0.0 {
                    tracing::warn!("{}: the {name} split is empty ({} examples are too few)", path.display(), splits.len());
                }
            }
            if mode == ReadMode::Strict {
                two_classes_each(&splits, &cfg.labels)?;
            }
            Ok((splits, report))
        }
        _ => Err(Error::Config("data.train_path, dev_path and test_path must be given together".into())),
    }
}

/// Refuse a non-empty split whose examples all carry one label: training on it learns nothing,
/// and accuracy on it measures nothing. The message gives every label's count.
pub fn two_classes_each(splits: &Splits, labels: &[String]) -> Result<()> {
    for (name, part) in splits.named() {
        let mut counts = vec![0usize; labels.len()];
        for e in part {
            counts[e.label] += 1;
        }
        if !part.is_empty() && counts.iter().filter(|&&c| c > 0).count() < 2 {
            let listed: Vec<String> = labels.iter().zip(&counts).map(|(l, c)| format!("{l:?} {c}")).collect();
            return Err(Error::Data(format!(
                "the {name} split has a single class ({}); wick needs at least two in train, dev and test (check data.label_column, data.label_map, or the split's data.seed)",
                listed.join(", ")
            )));
        }
    }
    Ok(())
}

/// A file that yields no examples is almost certainly a wrong column or label setting.
fn read_nonempty(path: &Path, spec: &ReadSpec, mode: ReadMode) -> Result<(Vec<Example>, ReadReport)> {
    let (examples, report) = read_file_with(path, spec, mode)?;
    if examples.is_empty() {
        return Err(Error::Data(format!(
            "{}: no labelled examples ({} rows read, {} dropped by data.drop_labels)",
            path.display(),
            report.rows,
            report.dropped_total()
        )));
    }
    Ok((examples, report))
}

/// Split examples by `fractions` (train, dev, test) with a seeded shuffle of whole components,
/// where a component is every example linked by a shared group value or an identical text.
pub fn split_examples(examples: Vec<Example>, fractions: [f64; 3], seed: u64) -> Splits {
    let mut components = components(&examples);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    components.shuffle(&mut rng);

    let n = examples.len() as f64;
    let total: f64 = fractions.iter().map(|f| f.max(0.0)).sum();
    let targets = fractions.map(|f| if total > 0.0 { f.max(0.0) / total * n } else { 0.0 });
    let mut sizes = [0usize; 3];
    let mut assigned = vec![0usize; examples.len()];
    for comp in &components {
        // Filling the split furthest below its target keeps every split within one component of
        // its share, which matters when a few groups (popular movies) are large.
        let split = (0..3)
            .filter(|&i| fractions[i] > 0.0)
            .max_by(|&a, &b| (targets[a] - sizes[a] as f64).total_cmp(&(targets[b] - sizes[b] as f64)).then(b.cmp(&a)))
            .unwrap_or(0);
        sizes[split] += comp.len();
        for &i in comp {
            assigned[i] = split;
        }
    }

    let mut parts: [Vec<Example>; 3] = Default::default();
    for (example, split) in examples.into_iter().zip(assigned) {
        parts[split].push(example);
    }
    // A seeded shuffle rather than file order, so that a prefix of a split (a quick eval on the
    // first N) is a fair sample instead of the first few groups of a sorted file.
    for part in &mut parts {
        part.shuffle(&mut rng);
    }
    let [train, dev, test] = parts;
    Splits { train, dev, test }
}

/// Indices of examples grouped into connected components, ordered by their first index so the
/// result depends only on the input order.
fn components(examples: &[Example]) -> Vec<Vec<usize>> {
    let mut uf = UnionFind::new(examples.len());
    let mut by_group: HashMap<&str, usize> = HashMap::new();
    let mut by_text: HashMap<&str, usize> = HashMap::new();
    for (i, e) in examples.iter().enumerate() {
        if let Some(g) = &e.group {
            let first = *by_group.entry(g).or_insert(i);
            uf.union(first, i);
        }
        let first = *by_text.entry(&e.text).or_insert(i);
        uf.union(first, i);
    }
    let mut slot: HashMap<usize, usize> = HashMap::new();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for i in 0..examples.len() {
        let root = uf.find(i);
        let k = *slot.entry(root).or_insert_with(|| {
            out.push(Vec::new());
            out.len() - 1
        });
        out[k].push(i);
    }
    out
}

/// Disjoint sets over `0..n` with path halving and union by size.
struct UnionFind {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        Self { parent: (0..n).collect(), size: vec![1; n] }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a;
        self.size[a] += self.size[b];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str, group: Option<&str>, line: usize) -> Example {
        Example { text: text.into(), label: line % 2, group: group.map(String::from), line }
    }

    #[test]
    fn written_splits_read_back_one_row_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let splits = Splits {
            train: vec![ex("a line\u{2028}separator inside", None, 1), ex("plain \"quoted\"", None, 2)],
            dev: vec![ex("dev text", None, 3)],
            test: vec![ex("test text", None, 4)],
        };
        let labels = ["negative".to_string(), "positive".to_string()];
        let paths = write_splits(&splits, &labels, dir.path()).unwrap();
        let train = std::fs::read_to_string(&paths[0]).unwrap();
        assert_eq!(train.lines().count(), 2, "{train}");
        assert!(!train.contains('\u{2028}'), "U+2028 must be escaped for line splitters");
        let spec = ReadSpec::new(labels.to_vec());
        let (back, _) = read_file_with(&paths[0], &spec, ReadMode::Strict).unwrap();
        assert_eq!(
            back.iter().map(|e| (e.text.as_str(), e.label)).collect::<Vec<_>>(),
            vec![("a line\u{2028}separator inside", 1), ("plain \"quoted\"", 0)]
        );
    }

    #[test]
    fn groups_and_texts_union_transitively() {
        // a-b share group g1, b-c share a text, d stands alone.
        let xs = vec![ex("one", Some("g1"), 1), ex("two", Some("g1"), 2), ex("two", Some("g2"), 3), ex("four", Some("g3"), 4)];
        assert_eq!(components(&xs), vec![vec![0, 1, 2], vec![3]]);
    }

    #[test]
    fn without_groups_each_distinct_text_is_a_component() {
        let xs = vec![ex("a", None, 1), ex("b", None, 2), ex("a", None, 3)];
        assert_eq!(components(&xs), vec![vec![0, 2], vec![1]]);
    }

    #[test]
    fn sizes_follow_fractions_and_zero_fraction_stays_empty() {
        let xs: Vec<Example> = (0..1000).map(|i| ex(&format!("t{i}"), None, i)).collect();
        let s = split_examples(xs.clone(), [0.8, 0.1, 0.1], 1);
        assert_eq!((s.train.len(), s.dev.len(), s.test.len()), (800, 100, 100));
        let s = split_examples(xs, [0.9, 0.0, 0.1], 1);
        assert_eq!((s.train.len(), s.dev.len(), s.test.len()), (900, 0, 100));
    }

    #[test]
    fn union_find_merges_sets() {
        let mut uf = UnionFind::new(4);
        uf.union(0, 1);
        uf.union(2, 3);
        assert_ne!(uf.find(0), uf.find(2));
        uf.union(1, 3);
        assert_eq!(uf.find(0), uf.find(2));
    }
}
