//! Fuzzes the BERT `config.json` reader: any bytes must give a validated
//! configuration (every size in bounds, heads dividing the hidden width) or an
//! error, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = raella_network::bert::parse_config(data, Path::new("config.json")) {
        assert!(c.num_attention_heads >= 1 && c.hidden_size % c.num_attention_heads == 0);
        assert!(c.num_hidden_layers <= 1024 && c.head_dim() >= 1);
    }
});
