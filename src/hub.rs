//! Resolving a model source (GGUF file, HF folder, hub id) to local files.
