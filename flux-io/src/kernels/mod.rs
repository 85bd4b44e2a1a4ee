//! The CPU fast paths behind [`crate::ops`]: which backend gets them ([`backend`]) and the
//! vectorised loops themselves ([`host`], [`norm`], [`rope`]), and products with a weight
//! made tile by tile ([`gemm`]), FLUX's joint attention from its projections
//! ([`joint_attention`]), each compiled per instruction set ([`simd`]).

pub(crate) mod backend;
#[cfg(any(feature = "flex", feature = "ndarray"))]
pub(crate) mod gemm;
pub(crate) mod host;
#[cfg(any(feature = "flex", feature = "ndarray"))]
pub(crate) mod joint_attention;
pub(crate) mod norm;
pub(crate) mod rope;
pub(crate) mod simd;
