//! Run-time instruction-set dispatch for the host loops: this crate is built for the x86-64
//! baseline (SSE2), so without it every loop here runs 4 lanes wide even on an AVX-512 CPU.
//! [`dispatch`] runs a [`Kernel`] compiled once per instruction set `pulp` knows (AVX-512,
//! AVX2 + FMA, the baseline; NEON on arm64) in the best one the CPU has.
//!
//! The results do not depend on the choice: the loops fix their own summation order (8-lane
//! partial sums), and Rust never fuses a multiply and an add on its own.

/// A host loop taking its arguments `A` as one value. `run` must be `#[inline(always)]`, and
/// so must every function it calls in its hot loop (iterator adaptors that end in an
/// out-of-line call such as `collect` or `sum` are not): a function that is not inlined is
/// compiled once, for the baseline.
pub trait Kernel<A> {
    /// What the loop returns.
    type Output;

    /// The loop.
    fn run(args: A) -> Self::Output;
}

/// `K::run(args)` compiled for the best instruction set of the CPU it runs on.
#[inline(always)]
pub fn dispatch<K: Kernel<A>, A>(args: A) -> K::Output {
    pulp::Arch::new().dispatch(Run::<K, A>(args, std::marker::PhantomData))
}

struct Run<K, A>(A, std::marker::PhantomData<K>);

impl<K: Kernel<A>, A> pulp::WithSimd for Run<K, A> {
    type Output = K::Output;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> K::Output {
        K::run(self.0)
    }
}
