//! Fuzzes the IDX reader on the bytes of a file as read from disk (gzip of one
//! or more members detected by magic, bounded decompression, then the IDX
//! parser): any bytes must give dimensions and data that agree, or an error,
//! never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((dims, bytes)) = raella_data::decode_idx(data, Path::new("fuzz.idx")) {
        let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        assert_eq!(n, Some(bytes.len()), "dimensions {dims:?} disagree with the data");
    }
});
