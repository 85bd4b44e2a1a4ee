//! Tokenizers of the two text encoders, on the `tokenizers` crate, with the special tokens,
//! truncation and padding FLUX's pipelines apply (`padding="max_length"`, `truncation=True`).

mod clip;
mod t5;

pub use clip::ClipTokenizer;
pub use t5::T5Tokenizer;

use tokenizers::Tokenizer;

use crate::{Error, Result};

/// One encoded prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Exactly `max_len` ids: `[BOS] tokens.. EOS` then padding.
    pub ids: Vec<u32>,
    /// Ids before padding (special tokens included, after truncation).
    pub len: usize,
    /// How many ids the prompt needed without truncation (special tokens included).
    pub full_len: usize,
}

impl Encoded {
    /// Whether the prompt was cut to fit (`full_len > ids.len()`); the closing token is kept.
    pub fn truncated(&self) -> bool {
        self.full_len > self.ids.len()
    }
}

/// The token wrapping and padding of one tokenizer family.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Specials {
    pub bos: Option<u32>,
    pub eos: u32,
    pub pad: u32,
}

/// Tokenizes `text` without special tokens, then wraps, truncates (keeping EOS) and pads.
pub(crate) fn encode(
    tokenizer: &Tokenizer,
    specials: Specials,
    text: &str,
    max_len: usize,
) -> Result<Encoded> {
    let reserved = 1 + usize::from(specials.bos.is_some());
    if max_len < reserved {
        return Err(Error::BadInput(format!(
            "max_len {max_len} leaves no room for the {reserved} special token(s)"
        )));
    }
    let encoding = tokenizer
        .encode(text, false)
        .map_err(|e| Error::tokenizer(format!("encoding {text:?}"), e))?;
    let tokens = encoding.get_ids();
    let full_len = tokens.len() + reserved;
    let kept = tokens.len().min(max_len - reserved);
    let mut ids = Vec::with_capacity(max_len);
    ids.extend(specials.bos);
    ids.extend_from_slice(&tokens[..kept]);
    ids.push(specials.eos);
    let len = ids.len();
    ids.resize(max_len, specials.pad);
    Ok(Encoded { ids, len, full_len })
}

/// The id of a special token the tokenizer must know.
pub(crate) fn special_id(tokenizer: &Tokenizer, token: &str) -> Result<u32> {
    tokenizer
        .token_to_id(token)
        .ok_or_else(|| Error::BadInput(format!("the tokenizer has no `{token}` token")))
}

/// Reads a tokenizer file, naming it in errors.
pub(crate) fn read(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| {
        flux_io::Error::Io {
            path: path.to_path_buf(),
            source,
        }
        .into()
    })
}
