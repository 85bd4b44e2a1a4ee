//! The 32-bit Mersenne Twister (MT19937) as PyTorch's CPU generator runs it.
//!
//! Torch keeps its own implementation (`at::mt19937`), but its output is the standard MT19937
//! sequence (Matsumoto & Nishimura, `init_genrand` seeding), so this is the textbook algorithm.
//! The one torch-specific fact is the seeding: `manual_seed(seed)` takes a 64-bit seed but
//! only its low 32 bits enter the state (`state[0] = seed & 0xffff_ffff`), so seeds `s` and
//! `s + 2^32` give the same numbers.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER: u32 = 0x8000_0000;
const LOWER: u32 = 0x7fff_ffff;

/// MT19937 state: 624 words and the read position.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    next: usize,
}

impl Mt19937 {
    /// Seeds like `torch.Generator().manual_seed(seed)`: the low 32 bits, Knuth's multiplier.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        // `next == N` forces a regeneration before the first draw.
        Self { state, next: N }
    }

    fn regenerate(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.next = 0;
    }

    /// The next tempered 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.next >= N {
            self.regenerate();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_mt19937_sequence() {
        // The C++ standard fixes the 10000th output of `std::mt19937` seeded 5489.
        let mut mt = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = mt.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn only_the_low_32_bits_of_the_seed_count() {
        let mut a = Mt19937::new(5);
        let mut b = Mt19937::new((1u64 << 32) + 5);
        for _ in 0..1000 {
            assert_eq!(a.next_u32(), b.next_u32());
        }
    }
}
