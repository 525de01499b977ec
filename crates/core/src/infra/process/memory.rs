//! Keeps resident memory flat over long dumps.
//!
//! The data path allocates and frees buffers of 1 MiB (compression blocks) to 16 MiB and more
//! (upload parts). glibc serves the first of those with `mmap` and returns them to the system on
//! `free`, but each such `free` also raises its *dynamic* mmap threshold, after which buffers of
//! that size come from the heap arenas instead, where they fragment: peak RSS then grows with the
//! size of the dump (65 MiB at 0.1 GB, 102 MiB at 0.5 GB in the benchmark). Pinning the threshold
//! keeps every large buffer an `mmap` of its own that goes back to the system when freed.

/// Allocations of this size and larger always get their own mapping.
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// Pins glibc's mmap threshold (see the module documentation). Call once, first thing in `main`.
/// A no-op on other C libraries.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    {
        // SAFETY: `mallopt` only changes allocator tuning parameters; it has no memory-safety
        // preconditions and may be called at any time from any thread.
        // It returns 0 only for an invalid parameter; then glibc's defaults simply stay in place.
        let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) };
    }
}
