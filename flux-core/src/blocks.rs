//! [`Blocks`]: a stack of transformer blocks, held on the device or in host memory
//! (block-level offload), one type for both so the model holds each stack once.

use std::borrow::Cow;
use std::marker::PhantomData;

use burn::module::Module;
use burn::tensor::backend::Backend;
use flux_io::HostParams;

/// The double or single blocks of a [`crate::Flux`]: resident on the device, or offloaded —
/// each block's weights in host memory, uploaded when the forward pass reaches it and freed
/// after. burn's module API (records, `num_params`, `to_device`) sees resident blocks only.
#[derive(Module, Debug)]
pub(crate) enum Blocks<B: Backend, M: Module<B>> {
    /// On the device.
    Resident(Vec<M>),
    /// In host memory, in the model's dtype and layout.
    Offloaded(HostBlocks<B>),
}

/// Blocks' weights in host memory: no parameters as far as burn's module API is concerned.
#[derive(Module, Debug)]
pub(crate) struct HostBlocks<B: Backend> {
    #[module(skip)]
    blocks: Vec<HostParams>,
    backend: PhantomData<B>,
}

impl<B: Backend> HostBlocks<B> {
    pub(crate) fn new(blocks: Vec<HostParams>) -> Self {
        Self {
            blocks,
            backend: PhantomData,
        }
    }
}

impl<B: Backend, M: Module<B>> Blocks<B, M> {
    /// Number of blocks.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Resident(blocks) => blocks.len(),
            Self::Offloaded(host) => host.blocks.len(),
        }
    }

    /// Block `i`: borrowed when resident; when offloaded, uploaded to `device` into
    /// `skeleton()`, a lazily built block of the same shape.
    pub(crate) fn get(
        &self,
        i: usize,
        skeleton: impl FnOnce() -> M,
        device: &B::Device,
    ) -> Cow<'_, M> {
        match self {
            Self::Resident(blocks) => Cow::Borrowed(&blocks[i]),
            Self::Offloaded(host) => Cow::Owned(host.blocks[i].upload(skeleton(), device)),
        }
    }

    /// Each block through `f` (with its index): in place when resident; uploaded, changed and
    /// moved back to host memory one at a time when offloaded.
    pub(crate) fn try_map_each<E>(
        self,
        skeleton: impl Fn() -> M,
        device: &B::Device,
        mut f: impl FnMut(M, usize) -> Result<M, E>,
    ) -> Result<Self, E> {
        Ok(match self {
            Self::Resident(blocks) => Self::Resident(
                blocks
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| f(b, i))
                    .collect::<Result<_, E>>()?,
            ),
            Self::Offloaded(host) => {
                let mut blocks = Vec::with_capacity(host.blocks.len());
                for (i, params) in host.blocks.iter().enumerate() {
                    let block = f(params.upload(skeleton(), device), i)?;
                    blocks.push(HostParams::from_module(block));
                }
                Self::Offloaded(HostBlocks::new(blocks))
            }
        })
    }

    /// The same blocks in host memory (already offloaded ones are kept as they are).
    pub(crate) fn offload(self) -> Self {
        match self {
            Self::Resident(blocks) => Self::Offloaded(HostBlocks::new(
                blocks.into_iter().map(HostParams::from_module).collect(),
            )),
            offloaded => offloaded,
        }
    }

    /// Bytes held in host memory (0 when resident).
    pub(crate) fn host_bytes(&self) -> usize {
        match self {
            Self::Resident(_) => 0,
            Self::Offloaded(host) => host.blocks.iter().map(HostParams::num_bytes).sum(),
        }
    }
}
