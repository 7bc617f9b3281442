//! Facts about the operating system the collector asks for in more than one place.

/// The system's memory page size in bytes (4 KiB on x86-64, up to 64 KiB on arm64).
#[cfg(target_os = "linux")]
pub(crate) fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: sysconf reads no memory of ours.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as usize,
        _ => 4096,
    })
}
