//! The T5 v1.1 encoder (FLUX's `text_encoder_2`).

mod attention;
mod config;
mod encoder;
mod layers;
mod load;
mod names;

pub use config::T5Config;
pub(crate) use encoder::check_ids;
pub use encoder::{T5Encoder, T5Precision};
pub use load::{load_t5, load_t5_with};
