//! Fuzzes the `tokenizer.json` reader and the encoder: any bytes must give a
//! tokenizer or an error, and a tokenizer must encode a fixed sentence to at
//! most the truncation length with ids, types and mask of equal length, or
//! fail with an error, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = raella_data::TextEncoder::from_bytes(data, Path::new("tokenizer.json"), 16) {
        if let Ok(e) = t.encode("A man is playing a guitar on stage.") {
            assert!(e.ids.len() <= 16);
            assert_eq!(e.ids.len(), e.type_ids.len());
            assert_eq!(e.ids.len(), e.mask.len());
        }
    }
});
