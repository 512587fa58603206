//! Freed heap memory handed back to the operating system.
//!
//! glibc's allocator returns freed memory on its own only from the top of each heap; the
//! rest stays resident until `malloc_trim` releases the free pages. The host calls this after
//! a crowd of connections has left and after each plugin compilation (a JavaScript or Python
//! runtime leaves hundreds of MB of freed compiler state). On other platforms it does
//! nothing.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn release() {
    // SAFETY: `malloc_trim` only releases free memory inside glibc's own heaps; it takes the
    // allocator's locks itself and touches no memory the program owns.
    #[allow(unsafe_code)]
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released = released == 1, "gave free heap memory back");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release() {}
