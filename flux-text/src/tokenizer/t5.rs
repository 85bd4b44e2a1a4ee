//! T5's sentencepiece unigram tokenizer, from the `tokenizer.json` FLUX ships in `tokenizer_2/`.

use std::path::Path;

use tokenizers::Tokenizer;

use super::{Encoded, Specials, encode, read, special_id};
use crate::{Error, Result};

/// The T5 tokenizer: the prompt's tokens, `</s>`, padded with `<pad>` (id 0) to 512 (dev) or
/// 256 (schnell). No BOS.
#[derive(Debug, Clone)]
pub struct T5Tokenizer {
    tokenizer: Tokenizer,
    specials: Specials,
}

impl T5Tokenizer {
    /// FLUX.1 \[dev\]'s `max_sequence_length`.
    pub const MAX_LEN_DEV: usize = 512;
    /// FLUX.1 \[schnell\]'s `max_sequence_length`.
    pub const MAX_LEN_SCHNELL: usize = 256;

    /// Loads a `tokenizer.json` (T5TokenizerFast's).
    ///
    /// # Errors
    /// An unreadable file, a JSON the `tokenizers` crate rejects, or a vocabulary without
    /// `</s>` / `<pad>`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let tokenizer = Tokenizer::from_bytes(read(path)?)
            .map_err(|e| Error::tokenizer(format!("loading {}", path.display()), e))?;
        let specials = Specials {
            bos: None,
            eos: special_id(&tokenizer, "</s>")?,
            pad: special_id(&tokenizer, "<pad>")?,
        };
        Ok(Self {
            tokenizer,
            specials,
        })
    }

    /// `max_len` ids: the prompt's tokens (cut to fit), `</s>`, then `<pad>` padding.
    ///
    /// # Errors
    /// `max_len < 1`, or a failure inside `tokenizers`.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        Ok(self.encode_with_info(text, max_len)?.ids)
    }

    /// [`T5Tokenizer::encode`], also saying how long the prompt was and whether it was cut.
    ///
    /// # Errors
    /// As [`T5Tokenizer::encode`].
    pub fn encode_with_info(&self, text: &str, max_len: usize) -> Result<Encoded> {
        encode(&self.tokenizer, self.specials, text, max_len)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }
}
