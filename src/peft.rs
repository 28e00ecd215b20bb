//! LoRA adapters in HF PEFT's folder format (`adapter_config.json` + `adapter_model.safetensors`),
//! whoever wrote them: wick, or Python PEFT.
//!
//! The config is read with PEFT's own matching rules (`peft.tuners.tuners_utils.
//! check_target_module_exists` and `peft.utils.other.get_pattern_key`, PEFT 0.21), so every module
//! PEFT would have adapted is adapted here with the same rank and scale. What wick cannot run the
//! way PEFT would (DoRA, LoRA biases, embedding adapters, ...) is refused with a line naming the
//! field, never silently approximated.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use fancy_regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::lora::{TARGETABLE, lora_scale};

/// File names inside an adapter folder.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// Adapter weights (PEFT keys).
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's pickled weights, which wick never loads.
pub const PICKLED_WEIGHTS: &str = "adapter_model.bin";
/// Names a linear classification head may have in `modules_to_save` (Llama's `score`, BERT-style `classifier`).
pub const HEAD_MODULES: [&str; 2] = ["score", "classifier"];

/// `adapter_config.json` as PEFT writes it; fields wick does not need are ignored, fields that
/// change the computation are either honoured or refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PeftConfig {
    /// "LORA" (anything else is another PEFT method).
    pub peft_type: Option<String>,
    /// "CAUSAL_LM", "SEQ_CLS", ...
    pub task_type: Option<String>,
    /// The base model the adapter was trained on (informational: shapes are what is checked).
    pub base_model_name_or_path: Option<String>,
    /// Default rank.
    pub r: usize,
    /// Default scaling numerator.
    pub lora_alpha: f64,
    /// Dropout on the adapter input (training only).
    pub lora_dropout: f64,
    /// A list of module-name suffixes, a regex string (full match), or "all-linear".
    pub target_modules: Option<Value>,
    /// Modules never adapted: a list of suffixes or a regex string.
    pub exclude_modules: Option<Value>,
    /// alpha/√r scaling instead of alpha/r.
    pub use_rslora: bool,
    /// Weight-decomposed LoRA: refused.
    pub use_dora: bool,
    /// A trainable bias on lora_B: refused.
    pub lora_bias: bool,
    /// Base-bias training ("none", "all", "lora_only"): only "none" is supported.
    pub bias: String,
    /// Weights stored (in, out) as GPT-2's Conv1D: refused (Llama's projections are nn.Linear).
    pub fan_in_fan_out: bool,
    /// Fully trained extra modules: a classification head (`score` / `classifier`) is supported.
    pub modules_to_save: Option<Vec<String>>,
    /// Layer indices to adapt (an int or a list), with a list `target_modules`.
    pub layers_to_transform: Option<Value>,
    /// The name of the layer list (`layers`), with `layers_to_transform`.
    pub layers_pattern: Option<Value>,
    /// Regex -> rank, per module.
    pub rank_pattern: Option<BTreeMap<String, usize>>,
    /// Regex -> alpha, per module.
    pub alpha_pattern: Option<BTreeMap<String, f64>>,
    /// `true`, `false`, "gaussian", "pissa", ...: initialisations that rewrite the base weights are refused.
    pub init_lora_weights: Value,
    /// Layer duplication: refused.
    pub layer_replication: Option<Value>,
    /// Trainable embedding rows: refused.
    pub trainable_token_indices: Option<Value>,
    /// Adapters on parameters instead of modules: refused.
    pub target_parameters: Option<Value>,
    /// Activated LoRA (applies from an invocation token on): refused.
    pub alora_invocation_tokens: Option<Value>,
}

impl Default for PeftConfig {
    fn default() -> Self {
        // PEFT's LoraConfig defaults.
        Self {
            peft_type: None,
            task_type: None,
            base_model_name_or_path: None,
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            target_modules: None,
            exclude_modules: None,
            use_rslora: false,
            use_dora: false,
            lora_bias: false,
            bias: "none".into(),
            fan_in_fan_out: false,
            modules_to_save: None,
            layers_to_transform: None,
            layers_pattern: None,
            rank_pattern: None,
            alpha_pattern: None,
            init_lora_weights: Value::Bool(true),
            layer_replication: None,
            trainable_token_indices: None,
            target_parameters: None,
            alora_invocation_tokens: None,
        }
    }
}

/// One projection of the base model as PEFT names it (`model.layers.3.self_attn.q_proj`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleShape {
    /// PEFT's module name.
    pub name: String,
    /// Output features.
    pub out_features: usize,
    /// Input features.
    pub in_features: usize,
}

/// The adapter of one projection, ready to attach.
#[derive(Debug, Clone)]
pub struct ModuleAdapter {
    /// PEFT's module name.
    pub module: String,
    /// A, (r, in).
    pub a: Tensor,
    /// B, (out, r).
    pub b: Tensor,
    /// The output scale s (alpha/r or alpha/√r, after rank_pattern / alpha_pattern).
    pub scale: f64,
}

/// An adapter folder, read and checked against the base model's shapes.
#[derive(Debug, Clone)]
pub struct PeftAdapter {
    /// The parsed config.
    pub config: PeftConfig,
    /// One entry per adapted projection, in the model's module order.
    pub modules: Vec<ModuleAdapter>,
    /// The linear classification head (`modules_to_save`), if any.
    pub head: Option<Tensor>,
}

impl PeftAdapter {
    /// The distinct ranks of the adapted modules, ascending.
    pub fn ranks(&self) -> Vec<usize> {
        let mut r: Vec<usize> = self.modules.iter().map(|m| m.a.dims()[0]).collect();
        r.sort_unstable();
        r.dedup();
        r
    }
}

/// Read `dir`'s adapter for a model whose projections are `modules`.
pub fn read_adapter(dir: &Path, modules: &[ModuleShape], device: &Device) -> Result<PeftAdapter> {
    let cfg_path = dir.join(ADAPTER_CONFIG);
    let weights = dir.join(ADAPTER_WEIGHTS);
    if !weights.is_file() && dir.join(PICKLED_WEIGHTS).is_file() {
        return Err(Error::Model(format!(
            "{}: wick never loads pickle files; convert it once in Python with \
             `PeftModel.from_pretrained(base, DIR).save_pretrained(DIR, safe_serialization=True)`",
            dir.join(PICKLED_WEIGHTS).display()
        )));
    }
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let config: PeftConfig =
        serde_json::from_str(&text).map_err(|e| Error::Model(format!("{}: not a PEFT adapter config ({e})", cfg_path.display())))?;
    let plan = Plan::new(&config, &cfg_path.display().to_string())?;
    let tensors = candle_core::safetensors::load(&weights, device)
        .map_err(|e| Error::Model(format!("{}: not a readable safetensors file ({e})", weights.display())))?;
    let (modules, head) = plan.match_tensors(&tensors, modules, &weights.display().to_string())?;
    Ok(PeftAdapter { config, modules, head })
}

/// Which modules a config adapts, and with what rank and alpha.
struct Plan<'a> {
    config: &'a PeftConfig,
    origin: String,
    targets: Targets,
    exclude: Option<Targets>,
    layers: Option<Vec<usize>>,
    layers_pattern: Vec<String>,
    rank_pattern: Vec<(Regex, usize)>,
    alpha_pattern: Vec<(Regex, f64)>,
    head: Option<String>,
}

/// `target_modules` / `exclude_modules`: suffix names or one full-match regex.
enum Targets {
    Names(Vec<String>),
    Pattern(Regex),
}

impl Targets {
    fn parse(value: &Value, field: &str, origin: &str) -> Result<Self> {
        match value {
            Value::String(s) if s.eq_ignore_ascii_case("all-linear") => Ok(Self::Names(TARGETABLE.iter().map(|s| s.to_string()).collect())),
            Value::String(s) => Ok(Self::Pattern(full_match(s, field, origin)?)),
            Value::Array(items) => {
                let names = items
                    .iter()
                    .map(|v| v.as_str().map(String::from))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| Error::Model(format!("{origin}: {field} must be a list of module names or a regex string")))?;
                if names.iter().any(|n| n.eq_ignore_ascii_case("all-linear")) {
                    return Ok(Self::Names(TARGETABLE.iter().map(|s| s.to_string()).collect()));
                }
                Ok(Self::Names(names))
            }
            other => Err(Error::Model(format!("{origin}: {field} = {other}: expected a list of module names or a regex string"))),
        }
    }

    /// PEFT's rule: a regex must match the whole name; a list entry must equal it or be its `.suffix`.
    fn matches(&self, key: &str) -> bool {
        match self {
            Self::Pattern(re) => re.is_match(key).unwrap_or(false),
            Self::Names(names) => names.iter().any(|t| key == t || key.ends_with(&format!(".{t}"))),
        }
    }
}

fn full_match(pattern: &str, field: &str, origin: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| Error::Model(format!("{origin}: {field} regex {pattern:?}: {e}")))
}

fn refuse(origin: &str, field: &str, why: &str) -> Error {
    Error::Model(format!("{origin}: {field}: {why}"))
}

impl<'a> Plan<'a> {
    fn new(config: &'a PeftConfig, origin: &str) -> Result<Self> {
        let origin = origin.to_string();
        if let Some(t) = config.peft_type.as_deref().filter(|t| !t.eq_ignore_ascii_case("lora")) {
            return Err(refuse(&origin, "peft_type", &format!("{t:?} is not LoRA (wick loads LoRA adapters only)")));
        }
        if config.use_dora {
            return Err(refuse(&origin, "use_dora", "DoRA adapters are not supported (wick runs plain LoRA)"));
        }
        if config.lora_bias {
            return Err(refuse(&origin, "lora_bias", "a bias on lora_B is not supported"));
        }
        if config.bias != "none" {
            return Err(refuse(
                &origin,
                "bias",
                &format!("{:?}: only \"none\" is supported (trained base biases are not loaded)", config.bias),
            ));
        }
        if config.fan_in_fan_out {
            return Err(refuse(&origin, "fan_in_fan_out", "true is for GPT-2 Conv1D weights; Llama projections are nn.Linear"));
        }
        if let Value::String(init) = &config.init_lora_weights {
            let lower = init.to_ascii_lowercase();
            if ["pissa", "olora", "corda", "loftq", "lora_ga"].iter().any(|p| lower.starts_with(p)) {
                return Err(refuse(
                    &origin,
                    "init_lora_weights",
                    &format!("{init:?} rewrites the base weights; convert the adapter to plain LoRA in PEFT first"),
                ));
            }
        }
        for (field, value) in [
            ("layer_replication", &config.layer_replication),
            ("trainable_token_indices", &config.trainable_token_indices),
            ("target_parameters", &config.target_parameters),
            ("alora_invocation_tokens", &config.alora_invocation_tokens),
        ] {
            if value.as_ref().is_some_and(|v| !v.is_null() && v != &Value::Array(vec![]) && v != &Value::Object(Default::default())) {
                return Err(refuse(&origin, field, "is set, and wick does not support it"));
            }
        }
        let Some(target_value) = &config.target_modules else {
            return Err(refuse(&origin, "target_modules", "missing (PEFT writes the resolved list; the file is incomplete)"));
        };
        let targets = Targets::parse(target_value, "target_modules", &origin)?;
        let exclude =
            config.exclude_modules.as_ref().filter(|v| !v.is_null()).map(|v| Targets::parse(v, "exclude_modules", &origin)).transpose()?;
        let layers = match &config.layers_to_transform {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => {
                Some(vec![n.as_u64().ok_or_else(|| refuse(&origin, "layers_to_transform", "not a layer index"))? as usize])
            }
            Some(Value::Array(items)) if items.is_empty() => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|v| v.as_u64().map(|n| n as usize))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| refuse(&origin, "layers_to_transform", "must be layer indices"))?,
            ),
            Some(other) => return Err(refuse(&origin, "layers_to_transform", &format!("{other}: expected an index or a list of indices"))),
        };
        let layers_pattern = match &config.layers_pattern {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) if s.is_empty() => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            Some(other) => return Err(refuse(&origin, "layers_pattern", &format!("{other}: expected a name or a list of names"))),
        };
        let compile = |field: &str, key: &str| -> Result<Regex> {
            Regex::new(&format!(r"^(.*\.)?({key})$")).map_err(|e| Error::Model(format!("{origin}: {field} key {key:?}: {e}")))
        };
        let rank_pattern =
            config.rank_pattern.iter().flatten().map(|(k, &v)| Ok((compile("rank_pattern", k)?, v))).collect::<Result<Vec<_>>>()?;
        let alpha_pattern =
            config.alpha_pattern.iter().flatten().map(|(k, &v)| Ok((compile("alpha_pattern", k)?, v))).collect::<Result<Vec<_>>>()?;
        let mut head = None;
        for m in config.modules_to_save.iter().flatten() {
            if HEAD_MODULES.contains(&m.as_str()) {
                head = Some(m.clone());
            } else {
                return Err(refuse(
                    &origin,
                    "modules_to_save",
                    &format!("{m:?} is not supported (only a classification head named score or classifier)"),
                ));
            }
        }
        Ok(Self { config, origin, targets, exclude, layers, layers_pattern, rank_pattern, alpha_pattern, head })
    }

    /// Whether PEFT would put an adapter on `module`.
    fn targets(&self, module: &str) -> bool {
        if self.exclude.as_ref().is_some_and(|e| e.matches(module)) {
            return false;
        }
        if !self.targets.matches(module) {
            return false;
        }
        match (&self.targets, &self.layers) {
            (Targets::Names(_), Some(layers)) => self.layer_index(module).is_some_and(|i| layers.contains(&i)),
            _ => true,
        }
    }

    /// The layer index PEFT reads from a module name: the number after `layers_pattern`, or the
    /// first numbered segment.
    fn layer_index(&self, module: &str) -> Option<usize> {
        let parts: Vec<&str> = module.split('.').collect();
        let after = |i: usize| parts.get(i + 1).and_then(|p| p.parse().ok());
        if self.layers_pattern.is_empty() {
            // PEFT's `.*?\.[^.]*\.(\d+)\.`: the first number that is at least the third segment.
            return (2..parts.len().saturating_sub(1)).find_map(|i| parts[i].parse().ok());
        }
        parts.iter().enumerate().find_map(|(i, p)| if self.layers_pattern.iter().any(|l| l == p) { after(i) } else { None })
    }

    /// Rank and alpha of `module` after `rank_pattern` / `alpha_pattern` (first matching key).
    fn rank_alpha(&self, module: &str) -> (usize, f64) {
        let hit = |re: &Regex| re.is_match(module).unwrap_or(false);
        let r = self.rank_pattern.iter().find(|(re, _)| hit(re)).map_or(self.config.r, |p| p.1);
        let alpha = self.alpha_pattern.iter().find(|(re, _)| hit(re)).map_or(self.config.lora_alpha, |p| p.1);
        (r, alpha)
    }

    /// Pair every LoRA tensor with a projection of the model, check shapes, and pick out the head.
    fn match_tensors(
        &self,
        tensors: &HashMap<String, Tensor>,
        modules: &[ModuleShape],
        weights: &str,
    ) -> Result<(Vec<ModuleAdapter>, Option<Tensor>)> {
        let origin = &self.origin;
        let by_name: HashMap<&str, &ModuleShape> = modules.iter().map(|m| (m.name.as_str(), m)).collect();
        let mut found: BTreeMap<String, (Option<&Tensor>, Option<&Tensor>)> = BTreeMap::new();
        let mut head = None;
        let mut keys: Vec<&String> = tensors.keys().collect();
        keys.sort();
        for key in keys {
            let t = &tensors[key];
            let rest = key.strip_prefix("base_model.model.").unwrap_or(key);
            if let Some(m) = HEAD_MODULES.iter().find(|m| rest.starts_with(&format!("{m}."))) {
                let tail = rest[m.len() + 1..].replace("modules_to_save.default.", "");
                match tail.as_str() {
                    "weight" if self.head.as_deref() == Some(*m) => head = Some(t.clone()),
                    "weight" => {
                        return Err(Error::Model(format!(
                            "{weights}: {key} is a head that adapter_config.json's modules_to_save does not list"
                        )));
                    }
                    _ => return Err(Error::Model(format!("{weights}: {key}: only a bias-free linear head ({m}.weight) is supported"))),
                }
                continue;
            }
            let Some((module, kind, tail)) = split_lora_key(rest) else {
                let what = if rest.contains("lora_magnitude_vector") {
                    "a DoRA magnitude (use_dora)"
                } else if rest.contains("lora_embedding") {
                    "an embedding adapter"
                } else {
                    "not a LoRA tensor"
                };
                return Err(Error::Model(format!("{weights}: {key}: {what}, which wick cannot load")));
            };
            if tail != "weight" && tail != "default.weight" {
                return Err(Error::Model(format!("{weights}: {key}: unexpected {kind} tensor `{tail}` (a lora_B bias needs lora_bias)")));
            }
            // A model saved without its LM-head wrapper has no leading `model.`.
            let module = if by_name.contains_key(module) { module.to_string() } else { format!("model.{module}") };
            let Some(shape) = by_name.get(module.as_str()) else {
                let hint = if module.ends_with("lm_head") || module.contains("embed_tokens") {
                    " (wick adapts the attention and MLP projections only)"
                } else {
                    ""
                };
                return Err(Error::Model(format!("{weights}: {key} matches no projection of the base model{hint}")));
            };
            if !self.targets(&shape.name) {
                return Err(Error::Model(format!(
                    "{weights}: {key}: {} is not a target of {origin} (target_modules / exclude_modules / layers_to_transform)",
                    shape.name
                )));
            }
            let slot = found.entry(shape.name.clone()).or_default();
            if kind == "lora_A" { slot.0 = Some(t) } else { slot.1 = Some(t) }
        }
        let mut out = Vec::new();
        for m in modules {
            let (a, b) = match found.get(&m.name) {
                Some((Some(a), Some(b))) => (*a, *b),
                Some((a, _)) => {
                    let missing = if a.is_some() { "lora_B" } else { "lora_A" };
                    return Err(Error::Model(format!("{weights}: {} has no {missing} tensor", m.name)));
                }
                None if self.targets(&m.name) => {
                    return Err(Error::Model(format!("{weights}: {} is targeted by {origin} but has no lora_A / lora_B tensors", m.name)));
                }
                None => continue,
            };
            let (r, alpha) = self.rank_alpha(&m.name);
            if a.dims() != [r, m.in_features] || b.dims() != [m.out_features, r] {
                return Err(Error::Model(format!(
                    "{weights}: {}: lora_A {:?} / lora_B {:?} do not fit the base model's ({} × {}) projection at r = {r}",
                    m.name,
                    a.dims(),
                    b.dims(),
                    m.out_features,
                    m.in_features
                )));
            }
            let scale = lora_scale(alpha, r, self.config.use_rslora);
            out.push(ModuleAdapter { module: m.name.clone(), a: a.clone(), b: b.clone(), scale });
        }
        if out.is_empty() {
            return Err(Error::Model(format!("{weights}: no LoRA tensors found")));
        }
        if self.head.is_some() && head.is_none() {
            return Err(Error::Model(format!("{weights}: modules_to_save lists a head but the file has no head weight")));
        }
        Ok((out, head))
    }
}

/// `model.layers.0.self_attn.q_proj.lora_A.weight` → (`model.layers.0.self_attn.q_proj`, `lora_A`, `weight`).
fn split_lora_key(key: &str) -> Option<(&str, &'static str, &str)> {
    for kind in ["lora_A", "lora_B"] {
        if let Some(pos) = key.find(&format!(".{kind}.")) {
            return Some((&key[..pos], kind, &key[pos + kind.len() + 2..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(json: &str) -> Result<(PeftConfig, String)> {
        let cfg: PeftConfig = serde_json::from_str(json).unwrap();
        Plan::new(&cfg, "adapter_config.json").map(|_| ())?;
        Ok((cfg, String::new()))
    }

    fn targets(json: &str, module: &str) -> bool {
        let cfg: PeftConfig = serde_json::from_str(json).unwrap();
        Plan::new(&cfg, "x").unwrap().targets(module)
    }

    #[test]
    fn target_rules_follow_peft() {
        let q = "model.layers.3.self_attn.q_proj";
        assert!(targets(r#"{"target_modules": ["q_proj"]}"#, q));
        assert!(!targets(r#"{"target_modules": ["k_proj"]}"#, q));
        // A regex string must match the whole name, so a bare suffix string matches nothing.
        assert!(!targets(r#"{"target_modules": "q_proj"}"#, q));
        assert!(targets(r#"{"target_modules": ".*\\.(q|v)_proj"}"#, q));
        assert!(targets(r#"{"target_modules": "all-linear"}"#, "model.layers.0.mlp.down_proj"));
        assert!(targets(r#"{"target_modules": ["q_proj"], "layers_to_transform": [3]}"#, q));
        assert!(!targets(r#"{"target_modules": ["q_proj"], "layers_to_transform": 2}"#, q));
        assert!(targets(r#"{"target_modules": ["q_proj"], "layers_to_transform": [3], "layers_pattern": "layers"}"#, q));
        assert!(!targets(r#"{"target_modules": ["q_proj"], "exclude_modules": ["model.layers.3.self_attn.q_proj"]}"#, q));
        assert!(!targets(r#"{"target_modules": "all-linear", "exclude_modules": ".*layers\\.3\\..*"}"#, q));
    }

    #[test]
    fn patterns_pick_rank_and_alpha_per_module() {
        let cfg: PeftConfig = serde_json::from_str(
            r#"{"target_modules": ["q_proj", "v_proj"], "r": 8, "lora_alpha": 16,
                "rank_pattern": {"layers.1.self_attn.q_proj": 4}, "alpha_pattern": {"v_proj": 32}}"#,
        )
        .unwrap();
        let plan = Plan::new(&cfg, "x").unwrap();
        assert_eq!(plan.rank_alpha("model.layers.1.self_attn.q_proj"), (4, 16.0));
        assert_eq!(plan.rank_alpha("model.layers.11.self_attn.q_proj"), (8, 16.0), "the key must match a whole name segment");
        assert_eq!(plan.rank_alpha("model.layers.0.self_attn.v_proj"), (8, 32.0));
    }

    #[test]
    fn unsupported_fields_are_refused_by_name() {
        for (json, field) in [
            (r#"{"target_modules": ["q_proj"], "use_dora": true}"#, "use_dora"),
            (r#"{"target_modules": ["q_proj"], "lora_bias": true}"#, "lora_bias"),
            (r#"{"target_modules": ["q_proj"], "bias": "all"}"#, "bias"),
            (r#"{"target_modules": ["q_proj"], "fan_in_fan_out": true}"#, "fan_in_fan_out"),
            (r#"{"target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}"#, "modules_to_save"),
            (r#"{"target_modules": ["q_proj"], "init_lora_weights": "pissa"}"#, "init_lora_weights"),
            (r#"{"target_modules": ["q_proj"], "peft_type": "IA3"}"#, "peft_type"),
            (r#"{"r": 8}"#, "target_modules"),
        ] {
            let err = plan_of(json).unwrap_err().to_string();
            assert!(err.contains(field), "{json}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        assert!(plan_of(r#"{"target_modules": ["q_proj"], "init_lora_weights": "gaussian", "layer_replication": null}"#).is_ok());
    }

    #[test]
    fn lora_keys_split_into_module_kind_and_tail() {
        assert_eq!(
            split_lora_key("model.layers.0.self_attn.q_proj.lora_A.weight"),
            Some(("model.layers.0.self_attn.q_proj", "lora_A", "weight"))
        );
        assert_eq!(split_lora_key("model.layers.0.mlp.up_proj.lora_B.default.weight").map(|s| s.2), Some("default.weight"));
        assert_eq!(split_lora_key("model.layers.0.mlp.up_proj.lora_magnitude_vector"), None);
    }
}
