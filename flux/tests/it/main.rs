//! The integration tests of `flux`, one module per topic, linked into one test binary
//! (one binary instead of 4 cuts build time: each would link burn and monomorphise the
//! models again).

mod common;

mod cache;
mod img2img;
mod io;
mod lora;
mod pipeline;
mod redux;
mod sampling;
mod tools;
mod true_cfg;
mod wgpu;
mod wgpu_kernels;
