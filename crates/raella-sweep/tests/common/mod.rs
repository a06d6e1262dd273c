//! Helpers shared by the integration tests (each test crate uses its own
//! subset, hence the `dead_code` allowance).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The committed presets file.
pub fn presets() -> PathBuf {
    root().join("fixtures/presets.toml")
}

/// A fresh, empty temporary folder named after the test crate, the process
/// and `tag` (so concurrent test binaries and tests never share one).
pub fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "raella-{}-{}-{tag}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temporary folder");
    d
}
