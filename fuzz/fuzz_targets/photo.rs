//! Fuzzes the image-folder reader's decoder: the bytes of one image file
//! through `decode_image` (the function `ImageFolder::load` calls per file),
//! to a model input of 1 or 3 channels and up to 64 x 64 pixels chosen by the
//! first three bytes. Any bytes must give exactly `C x H x W` values or an
//! error, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [c, h, w, image @ ..] = data else {
        return;
    };
    let channels = if c & 1 == 0 { 1 } else { 3 };
    let (h, w) = (usize::from(h % 64) + 1, usize::from(w % 64) + 1);
    if let Ok(v) = raella_data::decode_image(image, Path::new("fuzz.png"), channels, h, w) {
        assert_eq!(v.len(), channels * h * w);
    }
});
