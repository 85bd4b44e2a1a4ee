//! The CPU fast paths behind [`crate::ops`]: which backend gets them ([`backend`]) and the
//! vectorised loops themselves ([`host`]).

pub(crate) mod backend;
pub(crate) mod host;
