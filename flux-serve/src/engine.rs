//! [`Engine`]: the pipeline as the server uses it, whatever its backend.

use std::ops::ControlFlow;

use burn::tensor::backend::Backend;
use flux::{GenerateRequest, Pipeline, Progress, Resolved, Variant};
use image::RgbImage;

/// What the server needs of a pipeline. Implemented for every [`Pipeline`]; a trait object so
/// the routes are not generic over the backend.
pub trait Engine: Send + Sync + 'static {
    /// Checks a request and fills in the model's defaults without running anything.
    fn resolve(&self, request: &GenerateRequest) -> flux::Result<Resolved>;
    /// Runs a request; the callback sees every progress report and can cancel.
    fn generate(
        &self,
        request: &GenerateRequest,
        on_progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
    ) -> flux::Result<Vec<RgbImage>>;
    /// The model's name (`FLUX.1-dev`, ...).
    fn model(&self) -> &'static str;
    /// The variant (text-to-image, Kontext, Fill, Control).
    fn variant(&self) -> Variant;
}

impl<B: Backend> Engine for Pipeline<B>
where
    Pipeline<B>: Send + Sync,
{
    fn resolve(&self, request: &GenerateRequest) -> flux::Result<Resolved> {
        Pipeline::resolve(self, request)
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        on_progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
    ) -> flux::Result<Vec<RgbImage>> {
        self.generate_with_progress(request, on_progress)
    }

    fn model(&self) -> &'static str {
        self.kind().name()
    }

    fn variant(&self) -> Variant {
        Pipeline::variant(self)
    }
}
