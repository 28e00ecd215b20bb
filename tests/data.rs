//! Data module: readers, label rules, bad input, splits and checks, on fixtures and the real assets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use wick::config::{Config, DataConfig};
use wick::data::{Example, Format, ReadMode, ReadSpec, Splits, check, check_splits, load_splits, read_file, read_file_with};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data").join(name)
}

fn labels() -> Vec<String> {
    vec!["negative".into(), "positive".into()]
}

/// The fixtures' layout: fresh/rotten mapped, plot dropped, grouped by movie.
fn review_spec() -> ReadSpec {
    let mut spec = ReadSpec::new(labels());
    spec.group_column = Some("movie".into());
    spec.label_map = BTreeMap::from([("fresh".into(), "positive".into()), ("rotten".into(), "negative".into())]);
    spec.drop_labels = vec!["plot".into()];
    spec
}

fn summary(examples: &[Example]) -> Vec<(usize, Option<&str>)> {
    examples.iter().map(|e| (e.label, e.group.as_deref())).collect()
}

const EXPECTED_TEXTS: [&str; 4] =
    ["A joyous, sharp comedy.", "Dull and overlong.", "Sharp performances throughout.", "Tedious from start to finish."];

fn assert_reviews(examples: &[Example]) {
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, EXPECTED_TEXTS);
    assert_eq!(summary(examples), vec![(1, Some("m1")), (0, Some("m1")), (1, Some("m2")), (0, Some("m3"))]);
}

#[test]
fn csv_maps_labels_drops_plot_and_tracks_lines() {
    let (examples, report) = read_file_with(&fixture("reviews.csv"), &review_spec(), ReadMode::Strict).unwrap();
    assert_reviews(&examples);
    // The dropped plot row spans lines 4-5, so later rows must still carry their real line.
    assert_eq!(examples.iter().map(|e| e.line).collect::<Vec<_>>(), vec![2, 3, 6, 7]);
    assert_eq!(report.rows, 5);
    assert_eq!(report.examples, 4);
    assert_eq!(report.dropped, BTreeMap::from([("plot".to_string(), 1)]));
    assert_eq!(report.skipped_sentinels, 0);
}

#[test]
fn tsv_reads_the_same_rows() {
    let (examples, report) = read_file_with(&fixture("reviews.tsv"), &review_spec(), ReadMode::Strict).unwrap();
    assert_reviews(&examples);
    assert_eq!(report.dropped["plot"], 1);
}

#[test]
fn jsonl_skips_blank_lines_and_counts_lines() {
    let (examples, report) = read_file_with(&fixture("reviews.jsonl"), &review_spec(), ReadMode::Strict).unwrap();
    assert_reviews(&examples);
    assert_eq!(examples.iter().map(|e| e.line).collect::<Vec<_>>(), vec![1, 2, 5, 6]);
    assert_eq!(report.rows, 5);
}

#[test]
fn json_array_normalises_numeric_labels_and_skips_sentinel() {
    let mut spec = review_spec();
    spec.label_column = "class".into();
    spec.label_map = BTreeMap::from([("0".into(), "negative".into()), ("1".into(), "positive".into())]);
    let (examples, report) = read_file_with(&fixture("reviews.json"), &spec, ReadMode::Strict).unwrap();
    // 0.0 must map like 0, and "1" (a string) like 1; a null group is no group.
    assert_eq!(summary(&examples), vec![(1, Some("m1")), (0, Some("m1")), (1, Some("m2")), (0, None)]);
    assert_eq!(examples.iter().map(|e| e.line).collect::<Vec<_>>(), vec![0, 1, 3, 4]);
    assert_eq!(report.skipped_sentinels, 1);
    assert_eq!(report.dropped["plot"], 1);
    assert_eq!(report.rows, 6);
}

#[test]
fn compressed_files_read_like_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    let csv = std::fs::read(fixture("reviews.csv")).unwrap();
    let jsonl = std::fs::read(fixture("reviews.jsonl")).unwrap();

    let bz = dir.path().join("reviews.csv.bz2");
    let mut enc = bzip2::write::BzEncoder::new(std::fs::File::create(&bz).unwrap(), bzip2::Compression::default());
    enc.write_all(&csv).unwrap();
    enc.finish().unwrap();

    let gz = dir.path().join("reviews.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    enc.write_all(&jsonl).unwrap();
    enc.finish().unwrap();

    // No compression extension: found by the gzip magic bytes, format given explicitly.
    let sniffed = dir.path().join("reviews.data");
    std::fs::copy(&gz, &sniffed).unwrap();

    for path in [&bz, &gz] {
        let (examples, report) = read_file_with(path, &review_spec(), ReadMode::Strict).unwrap();
        assert_reviews(&examples);
        assert_eq!(report.dropped["plot"], 1, "{}", path.display());
    }
    let spec = ReadSpec { format: Format::Jsonl, ..review_spec() };
    assert_reviews(&read_file_with(&sniffed, &spec, ReadMode::Strict).unwrap().0);
    // Without a format, an unknown extension must be refused rather than guessed.
    let err = read_file_with(&sniffed, &review_spec(), ReadMode::Strict).unwrap_err().to_string();
    assert!(err.contains("reviews.data") && err.contains("data.format"), "{err}");
}

#[test]
fn read_file_takes_columns_and_rules_from_config() {
    let cfg = DataConfig {
        group_column: Some("movie".into()),
        label_map: review_spec().label_map,
        drop_labels: vec!["plot".into()],
        ..DataConfig::default()
    };
    let (examples, _) = read_file(&fixture("reviews.csv"), &cfg, ReadMode::Strict).unwrap();
    assert_reviews(&examples);
    assert_eq!(ReadSpec::from_config(&cfg).unwrap(), review_spec());
    // Without the map, fresh is unknown: the config really is what drives the rules.
    let err = read_file(&fixture("reviews.csv"), &DataConfig::default(), ReadMode::Strict).unwrap_err().to_string();
    assert!(err.contains("reviews.csv:2: unknown label \"fresh\""), "{err}");
}

#[test]
fn lenient_mode_counts_unknown_labels_and_empty_texts() {
    let spec = ReadSpec::new(labels());
    let (examples, report) = read_file_with(&fixture("unknown_label.csv"), &spec, ReadMode::Lenient).unwrap();
    assert_eq!(examples.len(), 2);
    let neg = &report.unknown_labels["neg"];
    assert_eq!(neg.count, 1);
    assert!(neg.first_at.as_deref().unwrap().ends_with("unknown_label.csv:4"), "{neg:?}");

    let (examples, report) = read_file_with(&fixture("empty_text.csv"), &spec, ReadMode::Lenient).unwrap();
    assert_eq!(examples.len(), 1);
    assert_eq!(report.empty_texts.count, 1);
    assert!(report.empty_texts.first_at.as_deref().unwrap().ends_with("empty_text.csv:3"));
}

#[test]
fn real_imdb_sentinel_is_skipped() {
    let mut spec = ReadSpec::new(labels());
    spec.label_column = "class".into();
    spec.label_map = BTreeMap::from([("0".into(), "negative".into()), ("1".into(), "positive".into())]);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/ood/imdb.json");
    let (examples, report) = read_file_with(&path, &spec, ReadMode::Strict).unwrap();
    assert_eq!(examples.len(), 1000);
    assert_eq!(report.skipped_sentinels, 1);
    assert_eq!(examples.iter().filter(|e| e.label == 1).count(), 500);
    assert!(examples.iter().all(|e| !e.text.is_empty()));
}

// ---- bad input: one line naming the file and the line (or element / key), never a panic ----

/// Read `path` strictly and return the error, checking it is one line that names the file.
fn read_error(path: &Path, spec: &ReadSpec) -> String {
    let err = read_file_with(path, spec, ReadMode::Strict).expect_err("bad input must be an error").to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(err.contains(&*name), "error does not name the file: {err}");
    assert!(!err.contains('\n'), "error is not one line: {err}");
    eprintln!("{err}");
    err
}

#[test]
fn bad_malformed_csv_row() {
    let err = read_error(&fixture("bad_fields.csv"), &ReadSpec::new(labels()));
    assert!(err.contains("bad_fields.csv:4: row has 3 fields but the header has 2"), "{err}");
}

#[test]
fn bad_missing_column() {
    let err = read_error(&fixture("missing_column.csv"), &ReadSpec::new(labels()));
    assert!(err.contains("missing_column.csv:1: no column \"text\""), "{err}");
    assert!(err.contains("review"), "should list the columns there are: {err}");
}

#[test]
fn bad_unknown_label() {
    let err = read_error(&fixture("unknown_label.csv"), &ReadSpec::new(labels()));
    assert!(
        err.ends_with(
            "unknown_label.csv:4: unknown label \"neg\" (labels: negative, positive; map it with data.label_map or drop it with data.drop_labels)"
        ),
        "{err}"
    );
}

#[test]
fn bad_empty_text_with_label() {
    let err = read_error(&fixture("empty_text.csv"), &ReadSpec::new(labels()));
    assert!(err.contains("empty_text.csv:3: empty text"), "{err}");
}

#[test]
fn bad_invalid_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("latin1.csv");
    std::fs::write(&csv, b"text,label\nfine text,positive\ncaf\xe9 au lait,negative\n").unwrap();
    let err = read_error(&csv, &ReadSpec::new(labels()));
    assert!(err.contains("latin1.csv:3: invalid UTF-8 in column \"text\""), "{err}");

    let jsonl = dir.path().join("latin1.jsonl");
    std::fs::write(&jsonl, b"{\"text\": \"ok\", \"label\": \"positive\"}\n{\"text\": \"caf\xe9\", \"label\": \"negative\"}\n").unwrap();
    let err = read_error(&jsonl, &ReadSpec::new(labels()));
    assert!(err.contains("latin1.jsonl:2: invalid UTF-8"), "{err}");
}

#[test]
fn bad_missing_file() {
    let path = fixture("does_not_exist.csv");
    let err = read_error(&path, &ReadSpec::new(labels()));
    assert!(err.contains("does_not_exist.csv:"), "{err}");
}

#[test]
fn bad_random_bytes_with_bz2_extension() {
    let dir = tempfile::tempdir().unwrap();
    let random: Vec<u8> = (0u32..512).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let path = dir.path().join("random.csv.bz2");
    std::fs::write(&path, &random).unwrap();
    let err = read_error(&path, &ReadSpec::new(labels()));
    assert!(err.contains("not a bzip2 file"), "{err}");

    // A real header followed by garbage gets past the magic check and fails in the decoder.
    let mut corrupt = b"BZh9".to_vec();
    corrupt.extend(&random);
    let path = dir.path().join("corrupt.csv.bz2");
    std::fs::write(&path, &corrupt).unwrap();
    let err = read_error(&path, &ReadSpec::new(labels()));
    assert!(err.contains("corrupt or truncated bzip2"), "{err}");
}

#[test]
fn bad_truncated_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&std::fs::read(fixture("reviews.csv")).unwrap()).unwrap();
    let gz = enc.finish().unwrap();
    let path = dir.path().join("cut.csv.gz");
    std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
    let err = read_error(&path, &review_spec());
    assert!(err.contains("corrupt or truncated gzip"), "{err}");
}

#[test]
fn bad_invalid_json() {
    let err = read_error(&fixture("invalid.json"), &ReadSpec::new(labels()));
    assert!(err.contains("invalid.json:2:"), "{err}");
    assert!(err.contains("invalid JSON"), "{err}");
}

#[test]
fn bad_json_element_not_an_object() {
    let err = read_error(&fixture("not_object.json"), &ReadSpec::new(labels()));
    assert!(err.contains("not_object.json: element [1]: expected an object"), "{err}");
    assert!(err.contains("found a string"), "{err}");
}

#[test]
fn bad_jsonl_missing_key_suggests_closest() {
    let err = read_error(&fixture("missing_key.jsonl"), &ReadSpec::new(labels()));
    assert!(err.contains("missing_key.jsonl:2: no key \"text\", did you mean `txt`?"), "{err}");
}

#[test]
fn bad_json_label_of_wrong_type_names_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.json");
    std::fs::write(&path, r#"[{"text": "fine", "label": "positive"}, {"text": "odd", "label": [1]}]"#).unwrap();
    let err = read_error(&path, &ReadSpec::new(labels()));
    assert!(err.contains("nested.json: element [1]: key \"label\" is an array"), "{err}");
}

#[test]
fn structural_errors_stay_errors_in_lenient_mode() {
    for name in ["bad_fields.csv", "missing_column.csv", "invalid.json", "not_object.json"] {
        assert!(read_file_with(&fixture(name), &ReadSpec::new(labels()), ReadMode::Lenient).is_err(), "{name}");
    }
}

// ---- splits ----

/// 300 rows in 60 groups; a few texts repeat across groups so duplicates must pull groups together.
fn synthetic_csv(dir: &Path) -> PathBuf {
    let mut out = String::from("text,label,movie\n");
    for i in 0..300 {
        let text = if i % 37 == 0 { "Same words again and again.".to_string() } else { format!("Review number {i} says things.") };
        let label = if i % 3 == 0 { "negative" } else { "positive" };
        out.push_str(&format!("{text},{label},movie{}\n", i % 60));
    }
    let path = dir.join("synthetic.csv");
    std::fs::write(&path, out).unwrap();
    path
}

fn assert_disjoint(splits: &Splits) {
    let mut group_home: HashMap<&str, &str> = HashMap::new();
    let mut text_home: HashMap<&str, &str> = HashMap::new();
    for (name, part) in splits.named() {
        for e in part {
            if let Some(g) = &e.group {
                let home = *group_home.entry(g).or_insert(name);
                assert_eq!(home, name, "group {g:?} is in {home} and {name}");
            }
            let home = *text_home.entry(&e.text).or_insert(name);
            assert_eq!(home, name, "text {:?} is in {home} and {name}", e.text);
        }
    }
}

#[test]
fn splits_are_deterministic_per_seed_and_group_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DataConfig { path: Some(synthetic_csv(dir.path())), group_column: Some("movie".into()), ..DataConfig::default() };
    let (a, report) = load_splits(&cfg, ReadMode::Strict).unwrap();
    let (b, _) = load_splits(&cfg, ReadMode::Strict).unwrap();
    assert_eq!(a, b, "same seed must give the same splits, in the same order");
    assert_eq!(a.len(), 300);
    assert_eq!(report.examples, 300);
    assert_disjoint(&a);
    assert!(a.train.len() >= 220 && a.train.len() <= 260, "train = {}", a.train.len());

    let (c, _) = load_splits(&DataConfig { seed: 43, ..cfg.clone() }, ReadMode::Strict).unwrap();
    assert_ne!(a.test, c.test, "a different seed must give different splits");
    assert_disjoint(&c);
}

#[test]
fn duplicates_stay_together_without_groups() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DataConfig { path: Some(synthetic_csv(dir.path())), group_column: None, ..DataConfig::default() };
    for seed in 0..5 {
        let (s, _) = load_splits(&DataConfig { seed, ..cfg.clone() }, ReadMode::Strict).unwrap();
        assert!(s.train.iter().all(|e| e.group.is_none()));
        assert_disjoint(&s);
        let repeated = s.named().iter().filter(|(_, p)| p.iter().any(|e| e.text.starts_with("Same words"))).count();
        assert_eq!(repeated, 1);
    }
}

#[test]
fn explicit_split_files_are_used_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let cfg = DataConfig {
        train_path: Some(write("train.csv", "text,label\none good film,positive\none bad film,negative\nleaked text here,positive\n")),
        dev_path: Some(write("dev.csv", "text,label\na dev review,negative\nanother dev review,positive\n")),
        test_path: Some(write(
            "test.jsonl",
            "{\"text\": \"Leaked text, here!\", \"label\": \"negative\"}\n{\"text\": \"a test review\", \"label\": \"positive\"}\n",
        )),
        ..DataConfig::default()
    };
    let (s, report) = load_splits(&cfg, ReadMode::Strict).unwrap();
    assert_eq!((s.train.len(), s.dev.len(), s.test.len()), (3, 2, 2));
    assert_eq!(s.train[2].text, "leaked text here", "explicit splits keep file order");
    assert_eq!(report.files.len(), 3);
    let report = check(&cfg, None).unwrap();
    assert_eq!(report.duplicates_across_splits.normalized, 1);
    assert_eq!(report.conflicts.texts, 1);
    assert!(!report.problems().is_empty());
}

// ---- check ----

#[test]
fn check_reports_lenient_problems_with_location() {
    let cfg = DataConfig { path: Some(fixture("unknown_label.csv")), ..DataConfig::default() };
    let report = check(&cfg, None).unwrap();
    assert_eq!(report.read.unknown_labels["neg"].count, 1);
    let problems = report.problems();
    let line = problems.iter().find(|p| p.contains("unknown label \"neg\"")).expect("unknown label is a problem");
    assert!(line.contains("unknown_label.csv:4"), "{line}");
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["read"]["unknown_labels"]["neg"]["count"], 1);
    assert!(report.render_table().contains("unknown label \"neg\""));
}

#[test]
fn check_counts_tokens_with_a_tokenizer() {
    let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
        "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
        "model":{"type":"WordLevel","vocab":{"[UNK]":0},"unk_token":"[UNK]"}}"#;
    let tok: tokenizers::Tokenizer = json.parse().unwrap();
    let ex = |text: &str, label| Example { text: text.into(), label, group: None, line: 1 };
    let splits = Splits { train: vec![ex("Good movie, truly.", 1), ex("bad", 0)], dev: vec![], test: vec![] };
    let report = check_splits(&splits, Default::default(), &DataConfig::default(), Some(&tok)).unwrap();
    let train = &report.splits[0];
    // Whitespace pre-tokenization splits off punctuation: 5 tokens vs 3 words.
    assert_eq!(train.per_label[1].tokens.map(|t| t.max), Some(5));
    assert_eq!(train.per_label[1].words.map(|t| t.max), Some(3));
    assert_eq!(train.tokens.map(|t| t.min), Some(1));
}

// ---- the real Rotten Tomatoes corpus ----

fn rotten_tomatoes() -> Config {
    // The config's data path is relative to the repository root, which is where cargo runs tests.
    wick::data::load_config(Path::new("configs/rotten-tomatoes.toml")).unwrap()
}

#[test]
fn rotten_tomatoes_splits_are_group_disjoint_and_leak_free() {
    let cfg = rotten_tomatoes();
    let (splits, report) = load_splits(&cfg.data, ReadMode::Strict).unwrap();
    let movies = |p: &[Example]| p.iter().filter_map(|e| e.group.as_deref()).collect::<HashSet<_>>().len();
    eprintln!(
        "rotten tomatoes: rows {} examples {} dropped {:?} | train {} ({} movies) dev {} ({} movies) test {} ({} movies) | movies {}",
        report.rows,
        report.examples,
        report.dropped,
        splits.train.len(),
        movies(&splits.train),
        splits.dev.len(),
        movies(&splits.dev),
        splits.test.len(),
        movies(&splits.test),
        movies(&splits.train) + movies(&splits.dev) + movies(&splits.test),
    );
    assert_eq!(report.rows, 13_905);
    assert_eq!(report.dropped["plot"], 1_097);
    assert_eq!(report.examples, 12_808);
    assert_eq!(splits.len(), 12_808);
    assert_eq!(movies(&splits.train) + movies(&splits.dev) + movies(&splits.test), 508);
    assert_disjoint(&splits);
    for (name, part, frac) in [("train", &splits.train, 0.8), ("dev", &splits.dev, 0.1), ("test", &splits.test, 0.1)] {
        let got = part.len() as f64 / 12_808.0;
        assert!((got - frac).abs() < 0.01, "{name}: {got:.4} of the data, wanted {frac}");
    }
    let (again, _) = load_splits(&cfg.data, ReadMode::Strict).unwrap();
    assert_eq!(splits, again);
}

#[test]
fn rotten_tomatoes_check_finds_no_leaks() {
    let cfg = rotten_tomatoes();
    let report = check(&cfg.data, None).unwrap();
    eprintln!("{}", report.render_table());
    assert_eq!(report.shared_groups, Some(0));
    assert_eq!(report.duplicates_across_splits.exact, 0);
    assert_eq!(report.read.dropped["plot"], 1_097);
    assert!(report.read.unknown_labels.is_empty());
    assert_eq!(report.splits.iter().map(|s| s.examples).sum::<usize>(), 12_808);
    assert!(report.splits.iter().all(|s| !s.imbalanced), "fresh/rotten is about 1.37:1");
}
