//! Tokenizer parity on real vocabularies (fixtures of `scripts/reference/gen_text.py`):
//! CLIP's released BPE against transformers' `CLIPTokenizer`, a small sentencepiece unigram
//! model against transformers' `T5TokenizerFast` and sentencepiece itself.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::common::fixture;
use flate2::read::GzDecoder;
use flux_text::{ClipTokenizer, Error, T5Tokenizer};
use serde_json::Value;

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("tokenizers/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Decompresses `tokenizers/clip/<name>.gz` into `dir`.
fn gunzip(name: &str, dir: &Path) -> PathBuf {
    let file = std::fs::File::open(fixture(&format!("tokenizers/clip/{name}.gz"))).unwrap();
    let mut text = String::new();
    GzDecoder::new(file).read_to_string(&mut text).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Compares every prompt at every stored max length; returns how many encodings were checked.
fn compare(
    family: &str,
    encode: impl Fn(&str, usize) -> flux_text::Result<flux_text::Encoded>,
) -> usize {
    let expected = expected();
    let prompts = expected["prompts"].as_array().unwrap();
    let mut checked = 0;
    for (max_len, rows) in expected[family].as_object().unwrap() {
        let max_len: usize = max_len.parse().unwrap();
        for (prompt, row) in prompts.iter().zip(rows.as_array().unwrap()) {
            let prompt = prompt.as_str().unwrap();
            let got = encode(prompt, max_len).unwrap();
            assert_eq!(
                got.ids,
                ids(&row["ids"]),
                "{family} max_len {max_len}: {prompt:?}"
            );
            assert_eq!(
                got.truncated(),
                row["truncated"].as_bool().unwrap(),
                "{prompt:?}"
            );
            assert_eq!(got.full_len, ids(&row["unpadded"]).len(), "{prompt:?}");
            checked += 1;
        }
    }
    checked
}

#[test]
fn clip_from_vocab_merges_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let tok = ClipTokenizer::from_vocab_merges(
        gunzip("vocab.json", dir.path()),
        gunzip("merges.txt", dir.path()),
    )
    .unwrap();
    assert_eq!(tok.inner().get_vocab_size(true), 49408);
    let n = compare("clip", |t, l| tok.encode_with_info(t, l));
    assert_eq!(n, 2 * 14);
}

#[test]
fn clip_from_tokenizer_json_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let tok = ClipTokenizer::from_file(gunzip("tokenizer.json", dir.path())).unwrap();
    compare("clip", |t, l| tok.encode_with_info(t, l));
}

#[test]
fn clip_pads_with_eos_and_keeps_it_when_truncating() {
    let dir = tempfile::tempdir().unwrap();
    let tok = ClipTokenizer::from_vocab_merges(
        gunzip("vocab.json", dir.path()),
        gunzip("merges.txt", dir.path()),
    )
    .unwrap();
    let short = tok
        .encode_with_info("a photo of a cat", ClipTokenizer::MAX_LEN)
        .unwrap();
    assert_eq!(short.ids.len(), 77);
    assert_eq!(short.ids[0], 49406);
    assert!(short.ids[short.len - 1..].iter().all(|&id| id == 49407));
    assert!(!short.truncated());
    let long = tok.encode_with_info(&"word ".repeat(100), 77).unwrap();
    assert!(long.truncated());
    assert_eq!(long.full_len, 102);
    assert_eq!(long.ids[76], 49407);
    assert!(matches!(tok.encode("x", 1), Err(Error::BadInput(_))));
}

#[test]
fn t5_matches_transformers() {
    let tok = T5Tokenizer::from_file(fixture("tokenizers/t5/tokenizer.json")).unwrap();
    let n = compare("t5", |t, l| tok.encode_with_info(t, l));
    assert_eq!(n, 3 * 14);
}

#[test]
fn t5_matches_sentencepiece() {
    // sentencepiece itself knows no special-token text: prompts spelling `</s>`, `<pad>` or
    // `<unk>` are tokenized as text there and as special tokens by transformers (and us).
    let tok = T5Tokenizer::from_file(fixture("tokenizers/t5/tokenizer.json")).unwrap();
    let expected = expected();
    let prompts = expected["prompts"].as_array().unwrap();
    let mut checked = 0;
    for (prompt, row) in prompts
        .iter()
        .zip(expected["t5"]["512"].as_array().unwrap())
    {
        let prompt = prompt.as_str().unwrap();
        if ["</s>", "<pad>", "<unk>"]
            .iter()
            .any(|s| prompt.contains(s))
        {
            continue;
        }
        let got = tok.encode_with_info(prompt, 4096).unwrap();
        assert_eq!(
            got.ids[..got.len],
            ids(&row["sentencepiece"])[..],
            "{prompt:?}"
        );
        checked += 1;
    }
    assert_eq!(checked, 13);
}

#[test]
fn t5_pads_with_zero() {
    let tok = T5Tokenizer::from_file(fixture("tokenizers/t5/tokenizer.json")).unwrap();
    let enc = tok
        .encode_with_info("a photo of a cat", T5Tokenizer::MAX_LEN_SCHNELL)
        .unwrap();
    assert_eq!(enc.ids.len(), 256);
    assert_eq!(enc.ids[enc.len - 1], 1);
    assert!(enc.ids[enc.len..].iter().all(|&id| id == 0));
    assert!(matches!(tok.encode("x", 0), Err(Error::BadInput(_))));
}

#[test]
fn missing_or_bad_files_are_errors() {
    let err = T5Tokenizer::from_file(fixture("tokenizers/nope.json")).unwrap_err();
    assert!(
        matches!(err, Error::Load(flux_io::Error::Io { .. })),
        "{err}"
    );
    let err = T5Tokenizer::from_file(fixture("t5/config.json")).unwrap_err();
    assert!(matches!(err, Error::Tokenizer { .. }), "{err}");
    let err =
        ClipTokenizer::from_vocab_merges(fixture("t5/config.json"), fixture("t5/config.json"))
            .unwrap_err();
    assert!(
        matches!(err, Error::Load(flux_io::Error::BadConfig { .. })),
        "{err}"
    );
}
