//! Resolving a model source (GGUF file, HF folder, hub id) to local files.
//!
//! Accepted sources, tried in this order:
//! - an existing `*.gguf` file;
//! - an existing HF model folder (`config.json`, `model.safetensors` or a sharded
//!   `model.safetensors.index.json`, `tokenizer.json`);
//! - a hub id `org/name[@revision][:file.gguf]`: without `:file` the repo is used as an HF
//!   folder; with `:file.gguf` that single GGUF file is fetched. `revision` (branch, tag or
//!   commit hash) defaults to `main`.
//!
//! Hub files come from the huggingface cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`); with `HF_HUB_OFFLINE=1` nothing is downloaded.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

const CONFIG: &str = "config.json";
const WEIGHTS: &str = "model.safetensors";
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
const TOKENIZER: &str = "tokenizer.json";
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
const CHAT_TEMPLATE: &str = "chat_template.jinja";

/// Where a model's files are on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A single GGUF file (weights, tokenizer and chat template together).
    Gguf(PathBuf),
    /// An HF transformers-style folder.
    HfFolder(HfFiles),
}

/// The files of an HF model folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfFiles {
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors`, or the shards of `model.safetensors.index.json` in name order.
    pub weights: Vec<PathBuf>,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `tokenizer_config.json`, if present (chat template, special tokens).
    pub tokenizer_config: Option<PathBuf>,
    /// `chat_template.jinja`, if present (newer `transformers` store the template there).
    pub chat_template: Option<PathBuf>,
}

impl HfFiles {
    /// The chat template: `chat_template.jinja` if present, else `tokenizer_config.json`'s.
    pub fn chat_template(&self) -> Result<Option<String>> {
        if let Some(path) = &self.chat_template {
            return std::fs::read_to_string(path).map(Some).map_err(|e| Error::io(path, e));
        }
        match &self.tokenizer_config {
            Some(path) => crate::tokenizer::chat_template_from_tokenizer_config(path),
            None => Ok(None),
        }
    }
}

/// A parsed hub reference `org/name[@revision][:file]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    /// `org/name`.
    pub repo_id: String,
    /// Branch, tag or commit; `main` when not given.
    pub revision: String,
    /// A single file to fetch (a `.gguf`), or `None` for the whole HF folder.
    pub file: Option<String>,
}

impl std::fmt::Display for HubRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.repo_id, self.revision)?;
        if let Some(file) = &self.file {
            write!(f, ":{file}")?;
        }
        Ok(())
    }
}

fn valid_segment(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.contains("..")
}

/// Parse `org/name[@revision][:file]`; `None` when `source` does not look like a hub id.
pub fn parse_hub_ref(source: &str) -> Option<HubRef> {
    let (head, file) = match source.split_once(':') {
        Some((h, f)) => (h, Some(f)),
        None => (source, None),
    };
    let (repo_id, revision) = match head.split_once('@') {
        Some((id, rev)) => (id, rev),
        None => (head, "main"),
    };
    let (org, name) = repo_id.split_once('/')?;
    if !valid_segment(org) || !valid_segment(name) {
        return None;
    }
    // Revisions may hold `/` (`refs/pr/1`) but must stay inside the cache's refs/ folder.
    let rev_ok = !revision.is_empty()
        && !revision.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        && revision.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    let file_ok = file.is_none_or(|f| !f.is_empty() && !f.starts_with('/') && !f.split('/').any(|p| p.is_empty() || p == ".."));
    (rev_ok && file_ok).then(|| HubRef { repo_id: repo_id.to_string(), revision: revision.to_string(), file: file.map(String::from) })
}

fn is_truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

/// Whether `HF_HUB_OFFLINE` asks for cache-only resolution.
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| is_truthy(&v))
}

/// The huggingface hub cache directory, following huggingface_hub's environment variables.
pub fn hub_cache_dir() -> Result<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("HF_HUB_CACHE") {
        return Ok(dir);
    }
    if let Some(home) = var("HF_HOME") {
        return Ok(home.join("hub"));
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return Ok(xdg.join("huggingface").join("hub"));
    }
    match var("HOME").or_else(|| var("USERPROFILE")) {
        Some(home) => Ok(home.join(".cache").join("huggingface").join("hub")),
        None => Err(Error::Model("cannot locate the huggingface cache: set HF_HOME".into())),
    }
}

/// Resolve `source` using the environment's hub cache and `HF_HUB_OFFLINE`.
pub fn resolve(source: &str) -> Result<ModelSource> {
    let path = Path::new(source);
    // Local paths never need the cache directory, so don't fail on a missing HOME for them.
    if path.exists() {
        return resolve_local(path);
    }
    resolve_with_cache(source, &hub_cache_dir()?, hub_offline())
}

/// Resolve `source` against an explicit hub cache dir; `offline` forbids network access.
pub fn resolve_with_cache(source: &str, cache_dir: &Path, offline: bool) -> Result<ModelSource> {
    let path = Path::new(source);
    if path.exists() {
        return resolve_local(path);
    }
    let Some(hub) = parse_hub_ref(source) else {
        return Err(Error::Model(format!("{source}: no such file or folder, and not a hub id (org/name[@revision][:file.gguf])")));
    };
    if hub.file.is_none() && hub.repo_id.ends_with(".gguf") {
        return Err(Error::Model(format!("{source}: no such file")));
    }
    if offline {
        return resolve_cached(&hub, cache_dir, true);
    }
    match resolve_online(&hub, cache_dir) {
        Ok(found) => Ok(found),
        Err(online) => resolve_cached(&hub, cache_dir, false)
            .map_err(|_| online)
            .inspect(|_| tracing::warn!("{hub}: hub not reachable, using the local cache in {}", cache_dir.display())),
    }
}

fn resolve_local(path: &Path) -> Result<ModelSource> {
    if path.is_dir() {
        return hf_folder(path).map(ModelSource::HfFolder);
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return Ok(ModelSource::Gguf(path.to_path_buf()));
    }
    Err(Error::Model(format!(
        "{}: expected a .gguf file or an HF model folder (config.json, model.safetensors, tokenizer.json)",
        path.display()
    )))
}

fn first_gguf(dir: &Path) -> Option<String> {
    let mut ggufs: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    ggufs.sort();
    ggufs.into_iter().next()
}

fn gguf_hint(dir: &Path) -> String {
    first_gguf(dir).map(|g| format!(" (it holds {g}; pass the .gguf file itself)")).unwrap_or_default()
}

/// Suggests the `:file.gguf` form when a hub repo holds GGUF files instead of an HF folder.
fn hub_gguf_hint(hub: &HubRef, gguf: Option<&str>) -> String {
    gguf.map(|g| format!(" (it holds GGUF files: use {}@{}:{g})", hub.repo_id, hub.revision)).unwrap_or_default()
}

/// The shard file names of a `model.safetensors.index.json`, sorted and deduplicated.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Model(format!("{}: invalid JSON: {e}", index.display())))?;
    let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
        return Err(Error::Model(format!("{}: no `weight_map` object", index.display())));
    };
    let mut names = BTreeSet::new();
    for (tensor, file) in map {
        let Some(file) = file.as_str() else {
            return Err(Error::Model(format!("{}: weight_map[{tensor}] is not a file name", index.display())));
        };
        // Shards must sit next to the index; a path escaping the folder is a broken index.
        if file.is_empty() || file.contains("..") || Path::new(file).is_absolute() {
            return Err(Error::Model(format!("{}: bad shard name `{file}`", index.display())));
        }
        names.insert(file.to_string());
    }
    if names.is_empty() {
        return Err(Error::Model(format!("{}: weight_map is empty", index.display())));
    }
    Ok(names.into_iter().collect())
}

fn hf_folder(dir: &Path) -> Result<HfFiles> {
    let need = |name: &str, hint: &str| -> Result<PathBuf> {
        let p = dir.join(name);
        if p.is_file() { Ok(p) } else { Err(Error::Model(format!("{}: HF model folder has no {name}{hint}", dir.display()))) }
    };
    let optional = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    let config = need(CONFIG, &gguf_hint(dir))?;
    let weights = if let Some(single) = optional(WEIGHTS) {
        vec![single]
    } else if let Some(index) = optional(WEIGHTS_INDEX) {
        shard_names(&index)?.iter().map(|n| need(n, &format!(" (listed in {WEIGHTS_INDEX})"))).collect::<Result<Vec<_>>>()?
    } else {
        return Err(Error::Model(format!("{}: HF model folder has no {WEIGHTS} (nor {WEIGHTS_INDEX})", dir.display())));
    };
    let tokenizer = need(TOKENIZER, "")?;
    Ok(HfFiles { config, weights, tokenizer, tokenizer_config: optional(TOKENIZER_CONFIG), chat_template: optional(CHAT_TEMPLATE) })
}

/// The snapshot folder of `hub` in the on-disk cache, or `None`.
fn snapshot_dir(cache: &Cache, hub: &HubRef) -> Option<PathBuf> {
    let base = cache.path().join(Repo::model(hub.repo_id.clone()).folder_name());
    // hf-hub reads refs/<rev> verbatim: tolerate a trailing newline and a bare commit hash.
    let commit = std::fs::read_to_string(base.join("refs").join(&hub.revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| hub.revision.clone());
    Some(base.join("snapshots").join(commit)).filter(|p| p.is_dir())
}

/// A file of `hub` in the on-disk cache, or `None`.
fn cached_file(cache: &Cache, hub: &HubRef, file: &str) -> Option<PathBuf> {
    let repo = Repo::with_revision(hub.repo_id.clone(), RepoType::Model, hub.revision.clone());
    cache.repo(repo).get(file).or_else(|| snapshot_dir(cache, hub).map(|d| d.join(file)).filter(|p| p.exists()))
}

fn resolve_cached(hub: &HubRef, cache_dir: &Path, offline: bool) -> Result<ModelSource> {
    let cache = Cache::new(cache_dir.to_path_buf());
    let why = if offline { " (HF_HUB_OFFLINE is set, so nothing is downloaded)" } else { "" };
    let not_cached =
        |file: &str| Error::Model(format!("{}@{}: {file} is not in the hub cache {}{why}", hub.repo_id, hub.revision, cache_dir.display()));
    let get = |file: &str| cached_file(&cache, hub, file).ok_or_else(|| not_cached(file));
    if let Some(file) = &hub.file {
        return gguf_name(hub, file).and_then(|_| get(file)).map(ModelSource::Gguf);
    }
    let config = get(CONFIG).map_err(|e| match snapshot_dir(&cache, hub).and_then(|d| first_gguf(&d)) {
        Some(g) => Error::Model(format!("{hub}: cached repo has no {CONFIG}{}", hub_gguf_hint(hub, Some(&g)))),
        None => e,
    })?;
    let weights = match cached_file(&cache, hub, WEIGHTS) {
        Some(single) => vec![single],
        None => {
            let index = cached_file(&cache, hub, WEIGHTS_INDEX).ok_or_else(|| not_cached(WEIGHTS))?;
            shard_names(&index)?.iter().map(|n| get(n)).collect::<Result<Vec<_>>>()?
        }
    };
    Ok(ModelSource::HfFolder(HfFiles {
        config,
        weights,
        tokenizer: get(TOKENIZER)?,
        tokenizer_config: cached_file(&cache, hub, TOKENIZER_CONFIG),
        chat_template: cached_file(&cache, hub, CHAT_TEMPLATE),
    }))
}

fn gguf_name<'a>(hub: &HubRef, file: &'a str) -> Result<&'a str> {
    if file.to_ascii_lowercase().ends_with(".gguf") {
        Ok(file)
    } else {
        Err(Error::Model(format!("{hub}: only a .gguf file can be named after `:`")))
    }
}

/// The hub client for `hub`, honouring `HF_ENDPOINT` and `HF_TOKEN` like huggingface_hub.
fn hub_repo(hub: &HubRef, cache_dir: &Path) -> Result<ApiRepo> {
    let mut builder = ApiBuilder::from_cache(Cache::new(cache_dir.to_path_buf())).with_progress(true);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        builder = builder.with_token(Some(token.trim().to_string()));
    }
    let api = builder.build().map_err(|e| Error::Model(format!("{hub}: cannot start the hub client: {e}")))?;
    Ok(api.repo(Repo::with_revision(hub.repo_id.clone(), RepoType::Model, hub.revision.clone())))
}

fn resolve_online(hub: &HubRef, cache_dir: &Path) -> Result<ModelSource> {
    let repo = hub_repo(hub, cache_dir)?;
    let fetch = |file: &str| -> Result<PathBuf> { repo.get(file).map_err(|e| Error::Model(format!("{hub}: cannot fetch {file}: {e}"))) };
    if let Some(file) = &hub.file {
        return fetch(gguf_name(hub, file)?).map(ModelSource::Gguf);
    }
    let listing = list_files(&repo, hub)?;
    let has = |f: &str| listing.contains(f);
    if !has(CONFIG) {
        let gguf = listing.iter().find(|f| f.to_ascii_lowercase().ends_with(".gguf"));
        return Err(Error::Model(format!("{hub}: repo has no {CONFIG}{}", hub_gguf_hint(hub, gguf.map(|g| g.as_str())))));
    }
    for required in [TOKENIZER] {
        if !has(required) {
            return Err(Error::Model(format!("{hub}: repo has no {required}")));
        }
    }
    let weights = if has(WEIGHTS) {
        vec![fetch(WEIGHTS)?]
    } else if has(WEIGHTS_INDEX) {
        let index = fetch(WEIGHTS_INDEX)?;
        shard_names(&index)?.iter().map(|n| fetch(n)).collect::<Result<Vec<_>>>()?
    } else {
        return Err(Error::Model(format!("{hub}: repo has no {WEIGHTS} (nor {WEIGHTS_INDEX})")));
    };
    let optional = |f: &str| if has(f) { fetch(f).map(Some) } else { Ok(None) };
    Ok(ModelSource::HfFolder(HfFiles {
        config: fetch(CONFIG)?,
        weights,
        tokenizer: fetch(TOKENIZER)?,
        tokenizer_config: optional(TOKENIZER_CONFIG)?,
        chat_template: optional(CHAT_TEMPLATE)?,
    }))
}

/// The local folder holding a PEFT adapter named by a hub id `org/name[@revision]`
/// (`adapter_config.json` and `adapter_model.safetensors`), from the cache or the hub.
pub fn resolve_adapter(source: &str) -> Result<PathBuf> {
    resolve_adapter_with_cache(source, &hub_cache_dir()?, hub_offline())
}

/// [`resolve_adapter`] against an explicit cache dir; `offline` forbids network access.
pub fn resolve_adapter_with_cache(source: &str, cache_dir: &Path, offline: bool) -> Result<PathBuf> {
    let hub = match parse_hub_ref(source) {
        Some(h) if h.file.is_none() => h,
        _ => return Err(Error::Model(format!("{source}: no such adapter folder, and not a hub id (org/name[@revision])"))),
    };
    let files = [crate::peft::ADAPTER_CONFIG, crate::peft::ADAPTER_WEIGHTS];
    let cache = Cache::new(cache_dir.to_path_buf());
    let cached = || -> Option<PathBuf> {
        let paths: Vec<PathBuf> = files.iter().map(|f| cached_file(&cache, &hub, f)).collect::<Option<_>>()?;
        paths[0].parent().map(Path::to_path_buf)
    };
    if offline {
        let why = " (HF_HUB_OFFLINE is set, so nothing is downloaded)";
        return cached().ok_or_else(|| {
            Error::Model(format!("{hub}: the adapter ({}) is not in the hub cache {}{why}", files.join(", "), cache_dir.display()))
        });
    }
    let online = || -> Result<PathBuf> {
        let repo = hub_repo(&hub, cache_dir)?;
        let mut dir = None;
        for f in files {
            let path = repo.get(f).map_err(|e| Error::Model(format!("{hub}: cannot fetch {f}: {e}")))?;
            dir = path.parent().map(Path::to_path_buf);
        }
        dir.ok_or_else(|| Error::Model(format!("{hub}: no adapter files")))
    };
    online().or_else(|e| cached().inspect(|_| tracing::warn!("{hub}: hub not reachable, using the local cache")).ok_or(e))
}

fn list_files(repo: &ApiRepo, hub: &HubRef) -> Result<HashSet<String>> {
    let info = repo.info().map_err(|e| Error::Model(format!("{hub}: cannot list the repo: {e}")))?;
    Ok(info.siblings.into_iter().map(|s| s.rfilename).collect())
}
