//! `[[compare.shifted]]`: labelled files from elsewhere (other sites, other traffic) on which
//! `wick compare` measures flexibility, the chosen prompt against the tuned model.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One shifted data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftedSet {
    /// Its name in the report ("imdb").
    pub name: String,
    /// The labelled file (any format `wick eval --data` reads).
    pub path: PathBuf,
    /// Column (or JSON key) of the text (default: `text`, else `data.text_column`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_column: Option<String>,
    /// Column (or JSON key) of the label (default: `label`, else `data.label_column`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// Raw label value → label name (e.g. `{ "0" = "negative", "1" = "positive" }`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_map: BTreeMap<String, String>,
}

impl ShiftedSet {
    /// The `--label-map` text of `label_map` ("0=negative,1=positive"), or None when empty.
    pub fn label_map_arg(&self) -> Option<String> {
        (!self.label_map.is_empty()).then(|| self.label_map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
    }

    /// A one-line error when the set cannot be read as configured, before anything runs.
    pub fn check(&self, i: usize, labels: &[String]) -> Result<(), String> {
        let at = format!("compare.shifted[{i}] ({:?})", self.name);
        if self.name.trim().is_empty() {
            return Err(format!("compare.shifted[{i}].name is empty"));
        }
        if self.path.as_os_str().is_empty() {
            return Err(format!("{at}: path is empty"));
        }
        for (raw, name) in &self.label_map {
            if !labels.contains(name) {
                return Err(format!("{at}: label_map {raw:?} = {name:?} is not one of the labels {labels:?}"));
            }
        }
        Ok(())
    }
}
