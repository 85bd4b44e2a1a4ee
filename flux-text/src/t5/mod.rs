//! The T5 v1.1 encoder (FLUX's `text_encoder_2`).

mod attention;
mod config;
mod encoder;
mod layers;
mod load;

pub use attention::{T5Attention, relative_position_bucket};
pub use config::T5Config;
pub(crate) use encoder::check_ids;
pub use encoder::{T5Block, T5Encoder, T5Precision, T5Stack};
pub use layers::{T5DenseGatedActDense, T5LayerNorm};
pub use load::{load_t5, load_t5_with};
