//! [`Config::validate`]: the values TOML types cannot express, each refusal naming its key.

use super::*;

impl Config {
    /// Check values that TOML types cannot express; the error names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let d = &self.data;
        for (key, v) in [("train_fraction", d.train_fraction), ("dev_fraction", d.dev_fraction), ("test_fraction", d.test_fraction)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("data.{key} = {v} must be between 0 and 1"));
            }
        }
        let sum = d.train_fraction + d.dev_fraction + d.test_fraction;
        if (sum - 1.0).abs() > 1e-6 {
            return Err(format!("data.train_fraction + dev_fraction + test_fraction = {sum}, must sum to 1"));
        }
        let explicit = [&d.train_path, &d.dev_path, &d.test_path].iter().filter(|p| p.is_some()).count();
        if explicit != 0 && explicit != 3 {
            return Err("data.train_path, dev_path and test_path must be given together".into());
        }
        if explicit == 0 && d.path.is_none() {
            return Err("data.path is missing (or give data.train_path, dev_path and test_path)".into());
        }
        for (key, p) in [("path", &d.path), ("train_path", &d.train_path), ("dev_path", &d.dev_path), ("test_path", &d.test_path)] {
            if let Some(p) = p {
                if !p.exists() {
                    return Err(format!("data.{key}: file {} does not exist (run scripts/fetch-assets?)", p.display()));
                }
            }
        }
        kinds::Format::parse(&d.format).map_err(|e| e.to_string())?;
        if d.labels.len() < 2 {
            return Err("data.labels needs at least two labels".into());
        }
        for (raw, name) in &d.label_map {
            if !d.labels.contains(name) {
                return Err(format!("data.label_map.{raw} = {name:?} is not one of data.labels {:?}", d.labels));
            }
        }
        let p = &self.prompt;
        if p.retriever == Retriever::Minilm && !p.retriever_model.is_dir() {
            return Err(format!(
                "prompt.retriever_model: folder {} does not exist (run scripts/fetch-assets?)",
                p.retriever_model.display()
            ));
        }
        if p.cot_max_tokens == 0 || p.cot_max_tokens > 1024 {
            return Err(format!("prompt.cot_max_tokens = {}: expected 1 to 1024", p.cot_max_tokens));
        }
        if !["sum", "mean"].contains(&p.label_norm.as_str()) {
            return Err(format!("prompt.label_norm = {:?}: expected \"sum\" or \"mean\"", p.label_norm));
        }
        for label in &d.labels {
            match p.label_words.get(label) {
                None => return Err(format!("prompt.label_words has no word for label {label:?}")),
                Some(w) if w.trim().is_empty() => return Err(format!("prompt.label_words.{label} is empty")),
                Some(_) => {}
            }
        }
        if let Some(extra) = p.label_words.keys().find(|k| !d.labels.contains(k)) {
            return Err(format!("prompt.label_words.{extra}: {extra:?} is not one of data.labels {:?}", d.labels));
        }
        if !p.template.contains("{text}") {
            return Err("prompt.template must contain {text}".into());
        }
        if let Some(i) = p.variants.iter().position(|v| !v.contains("{text}")) {
            return Err(format!("prompt.variants[{i}] must contain {{text}}"));
        }
        let m = &self.model;
        if !["auto", "f32", "f16", "bf16"].contains(&m.dtype.as_str()) {
            return Err(format!("model.dtype = {:?}: expected auto, f32, f16 or bf16", m.dtype));
        }
        if !(m.device == "auto" || m.device == "cpu" || m.device.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok())) {
            return Err(format!("model.device = {:?}: expected auto, cpu or cuda:N", m.device));
        }
        let l = &self.lora;
        if l.r == 0 {
            return Err("lora.r must be at least 1".into());
        }
        if !(0.0..1.0).contains(&l.dropout) {
            return Err(format!("lora.dropout = {} must be in [0, 1)", l.dropout));
        }
        const MODULES: [&str; 8] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "all-linear"];
        if let Some(bad) = l.target_modules.iter().find(|t| !MODULES.contains(&t.as_str())) {
            return Err(format!("lora.target_modules: unknown module {bad:?}{}", suggest(bad, &MODULES)));
        }
        let t = &self.train;
        if !["accuracy", "macro_f1"].contains(&t.metric.as_str()) {
            return Err(format!("train.metric = {:?}: expected accuracy or macro_f1", t.metric));
        }
        for (key, v) in
            [("batch_size", t.batch_size), ("grad_accum", t.grad_accum), ("max_seq_len", t.max_seq_len), ("eval_every", t.eval_every)]
        {
            if v == 0 {
                return Err(format!("train.{key} must be at least 1"));
            }
        }
        if !(t.max_minutes >= 0.0 && t.max_minutes.is_finite()) {
            return Err(format!("train.max_minutes = {} must be a non-negative number (0: no budget)", t.max_minutes));
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(format!("train.lr = {} must be a positive number", t.lr));
        }
        let cmp = &self.compare;
        if !["train", "dev", "test"].contains(&cmp.split.as_str()) {
            return Err(format!("compare.split = {:?} must be one of \"train\", \"dev\", \"test\"", cmp.split));
        }
        if cmp.batch_size == 0 {
            return Err("compare.batch_size must be at least 1".into());
        }
        if cmp.resamples < 1000 {
            return Err(format!("compare.resamples = {} must be at least 1000 (a 95% percentile interval needs them)", cmp.resamples));
        }
        if !(cmp.curve_epochs > 0.0 && cmp.curve_epochs.is_finite()) {
            return Err(format!("compare.curve_epochs = {} must be a positive number", cmp.curve_epochs));
        }
        if !(cmp.max_minutes >= 0.0 && cmp.max_minutes.is_finite()) {
            return Err(format!("compare.max_minutes = {} must be a number of minutes (0: no budget)", cmp.max_minutes));
        }
        for (i, set) in cmp.shifted.iter().enumerate() {
            set.check(i, &self.data.labels)?;
            if cmp.shifted[..i].iter().any(|s| s.name == set.name) {
                return Err(format!("compare.shifted[{i}]: the name {:?} is used twice", set.name));
            }
        }
        if !(cmp.search_minutes >= 0.0 && cmp.search_minutes.is_finite()) {
            return Err(format!("compare.search_minutes = {} must be a number of minutes (0: no prompt search)", cmp.search_minutes));
        }
        if cmp.curve_seeds == 0 {
            return Err("compare.curve_seeds must be at least 1".into());
        }
        for s in &cmp.tuned_strategies {
            match s.parse::<kinds::Strategy>() {
                Err(e) => return Err(format!("compare.tuned_strategies: {e}")),
                Ok(kinds::Strategy::ZeroShot) => {
                    return Err("compare.tuned_strategies: zero-shot is the tuned model's own row".into());
                }
                Ok(_) => {}
            }
        }
        for s in &cmp.strategies {
            s.parse::<kinds::Strategy>().map_err(|e| format!("compare.strategies: {e}"))?;
        }
        let dc = &self.decision;
        if !(0.0..=1.0).contains(&dc.required_accuracy) {
            return Err(format!("decision.required_accuracy = {} must be between 0 and 1 (0.9 means 90%)", dc.required_accuracy));
        }
        if !(0.0..=1.0).contains(&dc.equivalence_margin) {
            return Err(format!("decision.equivalence_margin = {} must be between 0 and 1 (0.01 means 1 point)", dc.equivalence_margin));
        }
        if !(dc.plateau_points >= 0.0 && dc.plateau_points.is_finite()) {
            return Err(format!("decision.plateau_points = {} must be a non-negative number of accuracy points", dc.plateau_points));
        }
        Ok(())
    }
}
