//! [`Blocks`]: a stack of transformer blocks, held on the device or in host memory
//! (block-level offload), one type for both.

use std::borrow::Cow;
use std::marker::PhantomData;

use burn::module::Module;
use burn::tensor::backend::Backend;

/// The double or single blocks of a [`crate::Flux`]: resident on the device, or offloaded —
/// each block's parameters in host memory ([`flux_nn::offload`]), uploaded when the forward
/// pass reaches the block and freed after.
#[derive(Module, Debug)]
pub(crate) struct Blocks<B: Backend, M: Module<B>> {
    blocks: Vec<M>,
    /// Bytes held in host memory; `None`: resident.
    #[module(skip)]
    offloaded: Option<usize>,
    backend: PhantomData<B>,
}

impl<B: Backend, M: Module<B>> Blocks<B, M> {
    /// `n` blocks made by `block(i)`, each moved to host memory as soon as it is built when
    /// `offload` is set (so the device never holds more than one), unless `failed()` says the
    /// build has already failed.
    pub(crate) fn build(
        n: usize,
        offload: bool,
        mut block: impl FnMut(usize) -> M,
        failed: impl Fn() -> bool,
    ) -> Self {
        let mut held = 0;
        let blocks = (0..n)
            .map(|i| {
                let b = block(i);
                if offload && !failed() {
                    let (b, bytes) = flux_nn::offload(b);
                    held += bytes;
                    b
                } else {
                    b
                }
            })
            .collect();
        Self {
            blocks,
            offloaded: offload.then_some(held),
            backend: PhantomData,
        }
    }

    /// Number of blocks.
    pub(crate) fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Block `i`: borrowed when resident; when offloaded, a copy whose parameters upload as
    /// they are read (and are freed with it).
    pub(crate) fn get(&self, i: usize) -> Cow<'_, M> {
        match self.offloaded {
            None => Cow::Borrowed(&self.blocks[i]),
            Some(_) => Cow::Owned(self.blocks[i].clone()),
        }
    }

    /// The same blocks in host memory (already offloaded ones are kept as they are).
    pub(crate) fn offload(self) -> Self {
        if self.offloaded.is_some() {
            return self;
        }
        let mut held = 0;
        let blocks = self
            .blocks
            .into_iter()
            .map(|b| {
                let (b, bytes) = flux_nn::offload(b);
                held += bytes;
                b
            })
            .collect();
        Self {
            blocks,
            offloaded: Some(held),
            backend: PhantomData,
        }
    }

    /// Bytes held in host memory (`None`: resident).
    pub(crate) fn host_bytes(&self) -> Option<usize> {
        self.offloaded
    }
}
