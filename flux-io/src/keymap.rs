//! Key tables: which stored tensor(s) make each module parameter, per checkpoint layout.

/// How one module parameter is made from stored tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One stored tensor, as is.
    Key(String),
    /// Stored tensors concatenated along dimension 0 (e.g. diffusers' separate `to_q`, `to_k`,
    /// `to_v` into BFL's fused `qkv`).
    Concat(Vec<String>),
    /// One stored tensor with its two halves along dimension 0 swapped (diffusers'
    /// `norm_out.linear` stores (scale, shift) where BFL stores (shift, scale)).
    SwapHalves(String),
}

impl Source {
    /// The stored tensors it reads.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Source::Key(k) | Source::SwapHalves(k) => vec![k],
            Source::Concat(ks) => ks.iter().map(String::as_str).collect(),
        }
    }
}

/// The table from module parameter paths to stored tensors, for one checkpoint layout.
pub trait KeyMap {
    /// Which stored tensor(s) make the parameter at `path`.
    fn source(&self, path: &str) -> Source;

    /// Stored tensors this layout knows and deliberately does not load (never "unexpected").
    fn ignored(&self, _key: &str) -> bool {
        false
    }
}
