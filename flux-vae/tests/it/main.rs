//! The integration tests of `flux-vae`, one module per topic, linked into one test binary
//! (one binary instead of 4 cuts build time: each would link burn and monomorphise the
//! models again).

mod common;

mod half;
mod image;
mod load_errors;
mod parity;
mod tiling;
