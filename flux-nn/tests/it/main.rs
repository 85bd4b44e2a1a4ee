//! flux-nn's integration tests, one binary: layers built in their stored form from real files
//! (every GGUF block type, quantizing at load, LoRA updates merged and at run time), the
//! errors of a loading session, the layout a model records, and offloaded modules.

mod common;
mod init;
mod lora;
mod offload;
mod packed;
