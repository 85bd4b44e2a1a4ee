//! The integration tests of `flux-core`, one module per topic, linked into one test binary
//! (one binary instead of 4 cuts build time: each would link burn and monomorphise the
//! models again).

mod common;

mod config;
mod errors;
mod gguf;
mod half;
mod offload;
mod parity;
mod stages;
