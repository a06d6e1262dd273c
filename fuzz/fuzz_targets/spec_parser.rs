//! Fuzzes the sweep-spec parser and validator: any text must give a spec or
//! an error, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let _ = raella_sweep::Spec::from_text(
            &root.join("fixtures/sweeps/fuzz.toml"),
            text,
            &root.join("fixtures/presets.toml"),
        );
    }
});
