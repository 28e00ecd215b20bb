//! Model-source resolution: local files and folders, and an hf-hub cache laid out on disk.

use std::path::{Path, PathBuf};
use std::process::Command;

use wick::hub::{HfFiles, HubRef, ModelSource, parse_hub_ref, resolve_with_cache};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Lay out `org/name` the way huggingface_hub does: content in blobs/, symlinks in snapshots/.
fn cache_repo(cache: &Path, repo_id: &str, files: &[(&str, &str)]) -> PathBuf {
    let repo = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    for (i, (name, body)) in files.iter().enumerate() {
        let blob = format!("{i:064x}");
        std::fs::write(repo.join("blobs").join(&blob), body).unwrap();
        let link = snapshot.join(name);
        #[cfg(unix)]
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&blob), &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(repo.join("blobs").join(&blob), &link).unwrap();
    }
    snapshot
}

fn folder(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
}

const INDEX: &str = r#"{"metadata": {}, "weight_map": {
    "a.weight": "model-00002-of-00002.safetensors",
    "b.weight": "model-00001-of-00002.safetensors",
    "c.weight": "model-00002-of-00002.safetensors",
    "d.weight": "model-00001-of-00002.safetensors"}}"#;

fn hf_files(err: wick::error::Result<ModelSource>) -> HfFiles {
    match err.unwrap() {
        ModelSource::HfFolder(files) => files,
        other => panic!("expected an HF folder, got {other:?}"),
    }
}

#[test]
fn hub_ids_parse_with_revision_and_file() {
    let r = |id: &str, rev: &str, file: Option<&str>| HubRef { repo_id: id.into(), revision: rev.into(), file: file.map(String::from) };
    assert_eq!(parse_hub_ref("org/name"), Some(r("org/name", "main", None)));
    assert_eq!(parse_hub_ref("Org-1/na.me_2@v1.0"), Some(r("Org-1/na.me_2", "v1.0", None)));
    assert_eq!(parse_hub_ref("org/name@refs/pr/3:m.gguf"), Some(r("org/name", "refs/pr/3", Some("m.gguf"))));
    assert_eq!(parse_hub_ref("org/name:sub/m-Q4_1.gguf"), Some(r("org/name", "main", Some("sub/m-Q4_1.gguf"))));
    for bad in ["name", "a/b/c", "/abs/path", "./x/y", "org/..", "org/name@", "org/name@../x", "org/name:", "org/n:../x"] {
        assert_eq!(parse_hub_ref(bad), None, "{bad}");
    }
}

#[test]
fn cached_repo_resolves_offline_by_branch_and_commit() {
    let cache = tempfile::tempdir().unwrap();
    let snap = cache_repo(
        cache.path(),
        "org/name",
        &[
            ("config.json", "{}"),
            ("model.safetensors", "w"),
            ("tokenizer.json", "{}"),
            ("tokenizer_config.json", r#"{"chat_template": "T"}"#),
        ],
    );
    let want = HfFiles {
        config: snap.join("config.json"),
        weights: vec![snap.join("model.safetensors")],
        tokenizer: snap.join("tokenizer.json"),
        tokenizer_config: Some(snap.join("tokenizer_config.json")),
        chat_template: None,
    };
    for source in ["org/name", "org/name@main", &format!("org/name@{COMMIT}")] {
        assert_eq!(hf_files(resolve_with_cache(source, cache.path(), true)), want, "{source}");
    }
    assert_eq!(want.chat_template().unwrap().as_deref(), Some("T"));
    assert_eq!(std::fs::read_to_string(&want.weights[0]).unwrap(), "w", "symlink into blobs/ resolves");
}

#[test]
fn cached_gguf_file_resolves_offline() {
    let cache = tempfile::tempdir().unwrap();
    let snap = cache_repo(cache.path(), "org/name-GGUF", &[("m.Q4_1.gguf", "GGUF")]);
    let got = resolve_with_cache("org/name-GGUF@main:m.Q4_1.gguf", cache.path(), true).unwrap();
    assert_eq!(got, ModelSource::Gguf(snap.join("m.Q4_1.gguf")));
    let err = resolve_with_cache("org/name-GGUF:other.gguf", cache.path(), true).unwrap_err().to_string();
    assert!(err.contains("other.gguf"), "{err}");
    let err = resolve_with_cache("org/name-GGUF:config.json", cache.path(), true).unwrap_err().to_string();
    assert!(err.contains(".gguf"), "{err}");
    // Naming the repo alone suggests the `:file.gguf` form.
    let err = resolve_with_cache("org/name-GGUF", cache.path(), true).unwrap_err().to_string();
    assert!(err.contains("org/name-GGUF@main:m.Q4_1.gguf"), "{err}");
}

#[test]
fn missing_repo_offline_names_id_revision_and_cache() {
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_with_cache("nobody/nothing@v2", cache.path(), true).unwrap_err().to_string();
    assert!(err.contains("nobody/nothing@v2"), "{err}");
    assert!(err.contains(&cache.path().display().to_string()), "{err}");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn cached_repo_missing_tokenizer_is_named() {
    let cache = tempfile::tempdir().unwrap();
    cache_repo(cache.path(), "org/partial", &[("config.json", "{}"), ("model.safetensors", "w")]);
    let err = resolve_with_cache("org/partial", cache.path(), true).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("org/partial@main"), "{err}");
}

#[test]
fn local_folder_requires_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    folder(&model, &[("config.json", "{}"), ("model.safetensors", "w")]);
    let err = resolve_with_cache(model.to_str().unwrap(), dir.path(), true).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("model"), "{err}");

    folder(&model, &[("tokenizer.json", "{}"), ("chat_template.jinja", "J")]);
    let files = hf_files(resolve_with_cache(model.to_str().unwrap(), dir.path(), true));
    assert_eq!(files.weights, [model.join("model.safetensors")]);
    assert_eq!(files.tokenizer_config, None);
    assert_eq!(files.chat_template().unwrap().as_deref(), Some("J"));
}

#[test]
fn local_folder_without_weights_or_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path(), &[("config.json", "{}"), ("tokenizer.json", "{}")]);
    let err = resolve_with_cache(dir.path().to_str().unwrap(), dir.path(), true).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    let gg = tempfile::tempdir().unwrap();
    folder(gg.path(), &[("x.gguf", "")]);
    let err = resolve_with_cache(gg.path().to_str().unwrap(), gg.path(), true).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("x.gguf"), "{err}");
}

#[test]
fn sharded_index_lists_shards_in_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    folder(
        dir.path(),
        &[("config.json", "{}"), ("tokenizer.json", "{}"), ("model.safetensors.index.json", INDEX), (shards[0], "1"), (shards[1], "2")],
    );
    let files = hf_files(resolve_with_cache(dir.path().to_str().unwrap(), dir.path(), true));
    assert_eq!(files.weights, shards.map(|s| dir.path().join(s)));

    std::fs::remove_file(dir.path().join(shards[1])).unwrap();
    let err = resolve_with_cache(dir.path().to_str().unwrap(), dir.path(), true).unwrap_err().to_string();
    assert!(err.contains(shards[1]), "{err}");

    let cache = tempfile::tempdir().unwrap();
    let snap = cache_repo(
        cache.path(),
        "org/sharded",
        &[("config.json", "{}"), ("tokenizer.json", "{}"), ("model.safetensors.index.json", INDEX), (shards[1], "2"), (shards[0], "1")],
    );
    let files = hf_files(resolve_with_cache("org/sharded", cache.path(), true));
    assert_eq!(files.weights, shards.map(|s| snap.join(s)));
}

#[test]
fn local_files_gguf_and_other() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("m.gguf");
    std::fs::write(&gguf, "").unwrap();
    assert_eq!(resolve_with_cache(gguf.to_str().unwrap(), dir.path(), true).unwrap(), ModelSource::Gguf(gguf));
    let txt = dir.path().join("m.txt");
    std::fs::write(&txt, "").unwrap();
    let err = resolve_with_cache(txt.to_str().unwrap(), dir.path(), true).unwrap_err().to_string();
    assert!(err.contains("m.txt") && err.contains(".gguf"), "{err}");
    let err = resolve_with_cache("./missing/thing.gguf", dir.path(), true).unwrap_err().to_string();
    assert!(err.contains("./missing/thing.gguf"), "{err}");
    let err = resolve_with_cache("models/missing.gguf", dir.path(), true).unwrap_err().to_string();
    assert!(err.contains("no such file"), "{err}");
}

const PROBE: &str = "WICK_HUB_ENV_PROBE";

/// Env handling runs in a child process: setting variables in this multi-threaded harness would race.
#[test]
fn environment_selects_cache_and_offline_mode() {
    let home = tempfile::tempdir().unwrap();
    let snap =
        cache_repo(&home.path().join("hub"), "org/name", &[("config.json", "{}"), ("model.safetensors", "w"), ("tokenizer.json", "{}")]);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "env_probe", "--nocapture", "--test-threads=1"])
        .env(PROBE, snap.join("config.json"))
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("HF_HUB_CACHE")
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && log.contains("1 passed"), "{log}");
}

/// The child half of `environment_selects_cache_and_offline_mode`; a no-op when run directly.
#[test]
fn env_probe() {
    let Some(want_config) = std::env::var_os(PROBE) else { return };
    let home = PathBuf::from(std::env::var_os("HF_HOME").unwrap());
    assert_eq!(wick::hub::hub_cache_dir().unwrap(), home.join("hub"));
    assert!(wick::hub::hub_offline());
    let files = hf_files(wick::hub::resolve("org/name"));
    assert_eq!(files.config, PathBuf::from(want_config));
    let err = wick::hub::resolve("org/absent").unwrap_err().to_string();
    assert!(err.contains("org/absent@main") && err.contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn peft_adapter_hub_ids_resolve_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let snapshot = cache_repo(
        &cache,
        "someone/smollm2-lora",
        &[("adapter_config.json", "{}"), ("adapter_model.safetensors", "x"), ("README.md", "card")],
    );
    let found = wick::hub::resolve_adapter_with_cache("someone/smollm2-lora", &cache, true).unwrap();
    assert_eq!(found, snapshot);
    assert_eq!(wick::hub::resolve_adapter_with_cache(&format!("someone/smollm2-lora@{COMMIT}"), &cache, true).unwrap(), snapshot);
    // A repo without the weights, offline: one line naming the repo and the cache.
    cache_repo(&cache, "someone/half-adapter", &[("adapter_config.json", "{}")]);
    let err = wick::hub::resolve_adapter_with_cache("someone/half-adapter", &cache, true).unwrap_err().to_string();
    assert!(err.contains("someone/half-adapter@main") && err.contains("HF_HUB_OFFLINE"), "{err}");
    let err = wick::hub::resolve_adapter_with_cache("not a hub id", &cache, true).unwrap_err().to_string();
    assert!(err.contains("not a hub id"), "{err}");
}
