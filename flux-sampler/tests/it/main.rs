//! The integration tests of `flux-sampler`, one module per topic, linked into one test binary
//! (one binary instead of 2 cuts build time: each would link burn and monomorphise the
//! models again).

mod noise;
mod sampler;
mod schedules;
