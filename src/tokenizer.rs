//! Tokenizer rebuilt from GGUF metadata, and chat templates.
