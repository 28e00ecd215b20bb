//! "Did you mean": the closest valid name to a mistyped one, for every message that names a key,
//! value or column.

/// ", did you mean `x`?" for the closest candidate, or the list of valid keys when none is close.
pub fn suggest(word: &str, candidates: &[&str]) -> String {
    let best = candidates.iter().map(|c| (strsim::normalized_damerau_levenshtein(word, c), *c)).max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((score, c)) if score >= 0.4 => format!(", did you mean `{c}`?"),
        _ if !candidates.is_empty() => format!(" (valid: {})", candidates.join(", ")),
        _ => String::new(),
    }
}
