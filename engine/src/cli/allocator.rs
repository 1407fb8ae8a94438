//! The heap settings of the process, chosen per subcommand before any other thread starts.

/// How much of the memory that the process frees it keeps for its own reuse (glibc only).
#[derive(Clone, Copy)]
pub(super) enum FreedMemory {
    /// Every buffer from the heap, kept: candle allocates a fresh buffer for every tensor op,
    /// and with glibc's defaults buffers above 32 MB (the proxy LM's logits are 33.5 MB) are
    /// mapped from the kernel and unmapped on free, so each op zero-faulted every page anew:
    /// a third of LQS annotation's CPU time was system time, and 3% with this.
    All,
    /// Buffers below 32 MB (glibc's largest threshold) from a heap that is never trimmed;
    /// larger ones stay mappings. By default glibc moves the threshold as the program runs
    /// and hands freed heap back, so decoding and compressing pages kept faulting in fresh
    /// memory: this gave 11% fewer page faults and about 0.5 s off the 10M-row fold. `All`
    /// runs that fold as fast in memory, but slower when it spills (`--memory-limit 1G`:
    /// 16.9 s against 15.4 s, mean of three runs).
    BelowMapThreshold,
}

/// Applies `policy` before any other thread starts; the heap then does not shrink until exit.
/// With `arenas`, glibc keeps at most that many heaps (arenas) instead of up to eight per
/// core: each heap reuses only the memory freed into it, and the output stage's blocking
/// threads (gathers, encoders, file writes, a dozen at once) each took a heap of its own, so
/// buffers freed by one were not reused by the next, which faulted in fresh memory. One heap
/// per worker thread took the 1M-row JSON lines fold (2 threads) from 435-557 MB at peak to
/// 360-445 MB and from 100-112K page faults to 83-93K; its median wall time went from 0.60 s
/// to 0.45 s in one set of 8 alternating runs, and moved less than the noise in another.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(super) fn tune_allocator(policy: FreedMemory, arenas: Option<usize>) {
    use std::ffi::c_int;
    // From glibc's <malloc.h>.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    const M_MMAP_MAX: c_int = -4;
    const M_ARENA_MAX: c_int = -8;
    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    // SAFETY: mallopt only sets allocator parameters; it runs before any other thread starts.
    unsafe {
        match policy {
            FreedMemory::All => mallopt(M_MMAP_MAX, 0),
            FreedMemory::BelowMapThreshold => mallopt(M_MMAP_THRESHOLD, 32 << 20),
        };
        mallopt(M_TRIM_THRESHOLD, c_int::MAX);
        if let Some(arenas) = arenas {
            mallopt(M_ARENA_MAX, arenas.clamp(1, c_int::MAX as usize) as c_int);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn tune_allocator(_policy: FreedMemory, _arenas: Option<usize>) {}
