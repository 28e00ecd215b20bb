//! wick: is prompting enough, or should we fine-tune? Measured on your data and model.

pub mod baseline;
pub mod bench;
pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod export;
pub mod hub;
pub mod init;
pub mod lora;
pub mod metrics;
pub mod model;
pub mod model_card;
pub mod ops;
pub mod peft;
pub mod prompt;
pub mod report;
pub mod runs;
pub mod score;
pub mod selftest;
pub mod stats;
pub mod tokenizer;
pub mod train;
