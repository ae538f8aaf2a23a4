//! The whole pipeline on raw capture bytes, exactly what `tfwire analyze
//! FILE` does: mutations of real captures hit every layer at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfwire::pipeline::Config;
use tfwire_fuzz::{analyze, tight_config};

fuzz_target!(|data: &[u8]| {
    // The last byte picks the limits, so the bytes stay a capture file.
    let tight = data.last().is_some_and(|b| b & 1 == 1);
    let config = if tight {
        tight_config()
    } else {
        Config::default()
    };
    let _ = analyze(data, config, false);
});
