//! llmrs: GPT-2 training from scratch, in the spirit of llm.c.
//!
//! `config` and `layout` describe the model and its flat buffers, `cpu` holds the fp32 reference layers,
//! `model` runs forward, backward and the AdamW update, `data`, `tokenizer` and `checkpoint` read and write
//! llm.c's file formats, `hf` imports Hugging Face GPT-2 checkpoints, `train` is the training loop behind the
//! `train_gpt2` binary, `plot` draws its metrics, and `prepare` (with `download` and `progress`) turns text into
//! llm.c token shards.

pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod corpus;
pub mod cpu;
pub mod data;
pub mod download;
pub mod error;
pub mod gpu;
pub mod hf;
pub mod layout;
pub mod metrics;
pub mod mfu;
pub mod model;
pub mod plot;
pub mod prepare;
pub mod presets;
pub mod progress;
pub mod rng;
pub mod rundir;
pub mod sample;
pub mod tokenizer;
pub mod train;

pub use config::GPT2Config;
pub use error::{Error, Result};
