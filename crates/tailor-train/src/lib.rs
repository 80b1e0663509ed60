//! Training for tailor: the HF-named training config, learning-rate schedules with transformers'
//! semantics, and AdamW with global-norm clipping over candle variables.
#![deny(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod optim;
pub mod schedule;
pub mod trainer;
