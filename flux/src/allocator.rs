//! Keeping freed memory in the process: glibc hands every block above its mmap threshold
//! straight back to the kernel when it is freed, so a transformer step that creates and drops
//! tens of multi-megabyte activations page-faults and zeroes them afresh each time (9 % of a
//! `medium` CPU step in the kernel's `clear_page`, docs/performance.md).

/// Tells glibc's allocator to keep freed blocks for reuse instead of returning them to the
/// kernel: large blocks come from the heap (mmap threshold at its 32 MiB maximum) and the heap
/// is never trimmed. The process's resident memory then stays at its peak instead of
/// following each step's allocations up and down; the CPU step runs 2-17 % faster
/// (docs/performance.md). Call it once at program start, before the threads start; the CLI and
/// `flux-serve` do. Returns whether the allocator took the settings (`false` off glibc).
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's ceiling for M_MMAP_THRESHOLD on 64-bit targets (DEFAULT_MMAP_THRESHOLD_MAX).
        const MMAP_THRESHOLD_MAX: libc::c_int = 32 * 1024 * 1024;
        // SAFETY: mallopt only changes allocator parameters; both values are in glibc's
        // documented ranges, and changing them while allocations are live is allowed.
        #[allow(unsafe_code)]
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
        };
        ok
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_settings() {
        let ok = super::retain_freed_memory();
        assert_eq!(ok, cfg!(all(target_os = "linux", target_env = "gnu")));
        // Large blocks still allocate, free and reallocate.
        let big = vec![1u32; 20 << 20];
        assert_eq!(big.iter().map(|&v| v as u64).sum::<u64>(), 20 << 20);
        drop(big);
        let again = vec![3u8; 64 << 20];
        assert!(again.iter().all(|&v| v == 3));
    }
}
