//! Process-wide settings for tensor workloads on the CPU.

/// Tells glibc's allocator to keep freed memory in the process instead of handing it back to the
/// kernel after every large tensor.
///
/// By default glibc serves allocations above a (self-adjusting) threshold with `mmap` and returns
/// the top of the heap with `brk` once more than a few MiB are free. A forward pass allocates and
/// frees buffers of several MiB per op, so every op paid again for page faults and for the kernel
/// zeroing fresh pages: on the mid-size benchmark model that was a fifth of the vision tower's time
/// (346 → 267 ms once turned off). With these settings freed buffers are reused; the process's
/// peak memory is what it was, it just does not shrink between ops.
///
/// Call it at the start of `main`, before threads start. A no-op off glibc.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc caps the mmap threshold at 32 MiB on 64-bit targets: larger blocks (weights,
        // whole-vocabulary logits) are still mapped and unmapped.
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        const TOP_PAD: libc::c_int = 64 << 20;
        // SAFETY: mallopt only changes allocator parameters; it is called before other threads
        // allocate.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
        }
    }
}
