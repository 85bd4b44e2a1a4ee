//! FLUX.1 [dev] and [schnell] text-to-image inference on burn.
//!
//! This facade re-exports the workspace's crates:
//! - [`core`] (`flux-core`): the flow-matching transformer and checkpoint loading;
//!
//! and will own the `Pipeline` builder that ties text encoders, transformer, sampler and VAE
//! together (see the repository's README for the status of each part).

pub use flux_core as core;

mod error;

pub use error::{Error, Result};
