//! flux-gguf's integration tests, one binary: the reader, decoder and quantizer against
//! gguf-py's (and ggml's) fixtures (`scripts/reference/gen_gguf.py`, `gen_gguf_q4_k.py`),
//! hostile files, and the writer.

mod common;
mod gguf_hostile;
mod gguf_reference;
mod gguf_writer;
