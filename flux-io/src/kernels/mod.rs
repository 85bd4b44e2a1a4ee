//! The CPU fast paths behind [`crate::ops`]: which backend gets them ([`backend`]) and the
//! vectorised loops themselves ([`host`], [`norm`], [`rope`]).

pub(crate) mod backend;
pub(crate) mod host;
pub(crate) mod norm;
pub(crate) mod rope;
