//! Stored stage results: each measured once under a key (the config hash that decides it and
//! the examples scored) and reused while the key matches.

#[allow(unused_imports)]
use super::*;

/// A stored result and the key it was measured under.
#[derive(serde::Deserialize, Serialize)]
pub(super) struct Stored<T> {
    pub(super) key: String,
    pub(super) value: T,
}

/// Reuse `dir/name.json` when its key matches, else measure and store it (atomically); true
/// when it was measured now.
pub(super) fn cached<T: Serialize + DeserializeOwned>(
    dir: &Path,
    name: &str,
    key: &str,
    fresh: bool,
    measure: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, bool)> {
    if let Some(value) = reuse(dir, name, key, fresh) {
        return Ok((value, false));
    }
    let value = measure()?;
    store(dir, name, key, &value)?;
    Ok((value, true))
}

/// The value stored in `dir/name.json` under `key`, unless `fresh` or absent or stale.
pub(super) fn reuse<T: DeserializeOwned>(dir: &Path, name: &str, key: &str, fresh: bool) -> Option<T> {
    if fresh {
        return None;
    }
    let path = dir.join(format!("{name}.json"));
    let stored = serde_json::from_str::<Stored<T>>(&std::fs::read_to_string(&path).ok()?).ok()?;
    (stored.key == key).then(|| {
        tracing::info!("compare: reusing {name} from {}", path.display());
        stored.value
    })
}

/// Write `value` with its key to `dir/name.json`, atomically.
pub(super) fn store<T: Serialize>(dir: &Path, name: &str, key: &str, value: &T) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = serde_json::to_string_pretty(&Stored { key: key.to_string(), value })?;
    crate::model::load::write_atomic(&dir.join(format!("{name}.json")), text.as_bytes())?;
    Ok(())
}

/// The key of a fine-tuning result: the config hash that decides it, the test examples and the
/// consistency sample.
pub(super) fn tuned_key(cfg: &Config, limit: Option<usize>, consistency_n: usize) -> String {
    format!("{}|{}|{limit:?}|consistency {consistency_n}", cfg.results_hash(), cfg.compare.split)
}

/// The key of the full fine-tuning run: [`tuned_key`], and the compare budget it shares.
pub(super) fn finetune_key(cfg: &Config, limit: Option<usize>, consistency_n: usize) -> String {
    let key = tuned_key(cfg, limit, consistency_n);
    if cfg.compare.max_minutes > 0.0 { format!("{key}|compare budget {}", cfg.compare.max_minutes) } else { key }
}
