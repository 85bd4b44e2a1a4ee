//! flux-io's integration tests, one binary: the GGUF module against gguf-py's fixtures
//! (`scripts/reference/gen_gguf.py`), hostile files, and the writer.

mod common;
mod gguf_hostile;
mod gguf_reference;
mod gguf_writer;
mod lora_errors;
mod packed;
