//! The binaries' allocator setting (they use mimalloc as the global allocator;
//! see `mimalloc` in the workspace's `Cargo.toml` and docs/DECISIONS.md 7b).

/// mimalloc's `mi_option_purge_delay` (the same index in its v2 and v3
/// headers, `include/mimalloc.h`; the bindings name no constant for it). The
/// test below checks the index against the option the library reads from
/// `MIMALLOC_PURGE_DELAY`.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc to keep the memory a process frees for its own reuse
/// instead of returning it to the kernel after 10 ms (its default purge
/// delay): a network's layers allocate and free buffers of the same sizes
/// again and again, and memory returned between them is faulted in and
/// cleared by the kernel again. The price is a higher memory peak (the
/// default sweep: 291 MB resident against 222 MB; docs/DECISIONS.md 7b).
/// Changes no result. Call it first thing in `main`; the environment variable
/// `MIMALLOC_PURGE_DELAY` still wins when set (10 is mimalloc's default).
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // The workspace's one unsafe call outside `raella-device` (DECISIONS 7b):
    // a function of mimalloc's C API, through the bindings its crate provides.
    #[allow(unsafe_code)]
    // SAFETY: `mi_option_set` takes any option index and value (out-of-range
    // indices are ignored) and only writes mimalloc's option table, which
    // the library reads with atomic loads; it allocates nothing.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_delay() -> std::ffi::c_long {
        #[allow(unsafe_code)]
        // SAFETY: reads mimalloc's option table (see `keep_freed_memory`).
        unsafe {
            libmimalloc_sys::mi_option_get(PURGE_DELAY)
        }
    }

    /// Option 15 is the one `MIMALLOC_PURGE_DELAY` sets (checked in a child
    /// process started with it), and `keep_freed_memory` sets it to -1.
    #[test]
    fn the_purge_delay_option_is_the_one_named() {
        if let Some(v) = std::env::var_os("RAELLA_TEST_PURGE_CHILD") {
            assert_eq!(v, "1");
            assert_eq!(purge_delay(), 1234);
            return;
        }
        let name = "allocator::tests::the_purge_delay_option_is_the_one_named";
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads", "1"])
            .env("RAELLA_TEST_PURGE_CHILD", "1")
            .env("MIMALLOC_PURGE_DELAY", "1234")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(child.status.success(), "child: {}\n{out}", child.status);
        // The child ran this test (a renamed test would match nothing and pass).
        assert!(out.contains(&format!("test {name} ... ok")), "{out}");
        keep_freed_memory();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay(), -1);
        }
    }
}
