//! wick: is prompting enough, or should we fine-tune? Measured on your data and model.

pub mod config;
pub mod error;
pub mod data;
pub mod hub;
pub mod tokenizer;
pub mod lora;
pub mod model;
pub mod ops;
pub mod train;
pub mod prompt;
pub mod score;
pub mod checkpoint;
pub mod metrics;
pub mod baseline;
pub mod eval;
