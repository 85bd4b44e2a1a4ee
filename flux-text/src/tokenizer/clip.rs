//! CLIP's byte-level BPE tokenizer (transformers `CLIPTokenizer`).

use std::collections::HashMap;
use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as Normalizers};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizers;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::{Encoded, Specials, encode, read, special_id};
use crate::{Error, Result};

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

/// CLIP's word split (OpenAI `simple_tokenizer.py`'s pattern, as transformers uses it):
/// the two special tokens, English contractions, letter runs, single digits, other symbol runs.
const PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The CLIP tokenizer: `<|startoftext|>`, tokens, `<|endoftext|>`, padded with
/// `<|endoftext|>` (FLUX.1's `tokenizer/` config) to 77.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    specials: Specials,
}

impl ClipTokenizer {
    /// CLIP's context length, FLUX's `max_length` for it.
    pub const MAX_LEN: usize = 77;

    /// Loads a `tokenizer.json` (as `CLIPTokenizerFast.save_pretrained` writes it).
    ///
    /// # Errors
    /// An unreadable file, a JSON the `tokenizers` crate rejects, or a vocabulary without
    /// `<|startoftext|>` / `<|endoftext|>`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let tokenizer = Tokenizer::from_bytes(read(path)?)
            .map_err(|e| Error::tokenizer(format!("loading {}", path.display()), e))?;
        Self::new(tokenizer)
    }

    /// Builds the tokenizer from `vocab.json` and `merges.txt` (what the FLUX.1 repository ships
    /// in `tokenizer/`), with the pipeline of transformers' `CLIPTokenizer`: NFC, whitespace runs
    /// to one space, lowercase; CLIP's word split; byte-level BPE with `</w>` word ends.
    ///
    /// # Errors
    /// Unreadable files, a malformed vocabulary or merge line, missing special tokens.
    pub fn from_vocab_merges(vocab: impl AsRef<Path>, merges: impl AsRef<Path>) -> Result<Self> {
        let (vocab, merges) = (vocab.as_ref(), merges.as_ref());
        let vocab_map: HashMap<String, u32> =
            serde_json::from_str(&read(vocab)?).map_err(|e| bad_file(vocab, e.to_string()))?;
        let merge_list = parse_merges(&read(merges)?)
            .map_err(|line| bad_file(merges, format!("bad merge line {line:?}")))?;
        Self::from_parts(vocab_map, merge_list)
    }

    /// Builds the tokenizer from an in-memory vocabulary and merge list (ranked by position).
    ///
    /// # Errors
    /// As [`ClipTokenizer::from_vocab_merges`].
    pub fn from_parts(vocab: HashMap<String, u32>, merges: Vec<(String, String)>) -> Result<Self> {
        let bpe = BPE::builder()
            .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".into())
            .unk_token(EOS.into())
            .fuse_unk(false)
            .build()
            .map_err(|e| Error::tokenizer("building CLIP's BPE", e))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let whitespace = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
            .map_err(|e| Error::tokenizer("building CLIP's normalizer", e))?;
        tokenizer.with_normalizer(Some(Normalizers::new(vec![
            NFC.into(),
            whitespace.into(),
            Lowercase.into(),
        ])));
        let split = Split::new(
            SplitPattern::Regex(PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| Error::tokenizer("building CLIP's pre-tokenizer", e))?;
        tokenizer.with_pre_tokenizer(Some(PreTokenizers::new(vec![
            split.into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        tokenizer.add_special_tokens(&[AddedToken::from(BOS, true), AddedToken::from(EOS, true)]);
        Self::new(tokenizer)
    }

    fn new(tokenizer: Tokenizer) -> Result<Self> {
        let eos = special_id(&tokenizer, EOS)?;
        let specials = Specials {
            bos: Some(special_id(&tokenizer, BOS)?),
            eos,
            pad: eos,
        };
        Ok(Self {
            tokenizer,
            specials,
        })
    }

    /// `max_len` ids: BOS, the prompt's tokens (cut to fit), EOS, then EOS padding.
    ///
    /// # Errors
    /// `max_len < 2`, or a failure inside `tokenizers`.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        Ok(self.encode_with_info(text, max_len)?.ids)
    }

    /// [`ClipTokenizer::encode`], also saying how long the prompt was and whether it was cut.
    ///
    /// # Errors
    /// As [`ClipTokenizer::encode`].
    pub fn encode_with_info(&self, text: &str, max_len: usize) -> Result<Encoded> {
        encode(&self.tokenizer, self.specials, text, max_len)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

/// `merges.txt` lines `a b`, skipping the `#version` header and blank lines; a bad line is
/// returned as the error.
fn parse_merges(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with("#version"))
        .map(|l| match l.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                Ok((a.to_string(), b.to_string()))
            }
            _ => Err(l.to_string()),
        })
        .collect()
}

/// A tokenizer file that does not parse.
fn bad_file(path: &Path, reason: String) -> Error {
    flux_io::Error::BadConfig {
        path: path.to_path_buf(),
        reason,
    }
    .into()
}
