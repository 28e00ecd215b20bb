//! The instruction bank the search tries: task-neutral templates that name the label set and
//! nothing about the task, so they fit any labelled data. `{labels}` becomes the label names
//! ("negative or positive", "a, b or c"), `{text}` the example.

/// Task-neutral instruction templates (each holds `{text}`; most name `{labels}`).
pub const INSTRUCTIONS: [&str; 14] = [
    "Classify the text as {labels}.\nText: {text}",
    "Text: {text}\nWhich label fits this text best: {labels}?",
    "Read the text and answer with one word, {labels}.\nText: {text}",
    "{text}\nIs this text {labels}?",
    "Label the following text. Possible labels: {labels}.\n{text}",
    "Here is a text: \"{text}\"\nAnswer {labels}.",
    "Decide whether the text below is {labels}.\n\n{text}",
    "Text: {text}\nQuestion: is it {labels}? Answer with one word.",
    "You will see a text. Reply with exactly one of: {labels}.\nText: {text}",
    "Categorize this text as {labels}.\n\"{text}\"",
    "What is the correct label for this text, {labels}?\n{text}",
    "Input: {text}\nOutput one label ({labels}).",
    "Given the text \"{text}\", choose {labels}.",
    "Classify: {text}\nOptions: {labels}.",
];

/// The label names as the instructions say them: "a or b", "a, b or c".
pub fn label_list(labels: &[String]) -> String {
    match labels {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Every bank instruction with the label names filled in.
pub fn instructions(labels: &[String]) -> Vec<String> {
    let names = label_list(labels);
    INSTRUCTIONS.iter().map(|t| t.replace("{labels}", &names)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instruction_holds_the_text_and_names_any_label_set() {
        let three: Vec<String> = ["billing", "outage", "other"].map(String::from).to_vec();
        assert_eq!(label_list(&three), "billing, outage or other");
        for t in instructions(&three) {
            assert!(t.contains("{text}") && !t.contains("{labels}"), "{t}");
            assert!(!t.to_lowercase().contains("sentiment") && !t.to_lowercase().contains("review"), "{t}");
        }
        assert!(INSTRUCTIONS.len() >= 12);
    }
}
