//! TF Serving REST JSON: request bodies of every verb, and URL routing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfwire::tfserving::rest::{parse_request_body, route};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    // A URL on the first line routes; the whole body parses as JSON.
    if sel & 0x80 != 0 {
        let text = String::from_utf8_lossy(body);
        let line = text.lines().next().unwrap_or("");
        let verb = ["POST", "GET", "PUT", "HEAD"][usize::from(sel & 3)];
        let _ = route(verb, line);
        return;
    }
    let method = [
        None,
        Some("Predict"),
        Some("Classify"),
        Some("Regress"),
        Some("MultiInference"),
    ][usize::from(sel) % 5];
    let r = parse_request_body(method, body);
    assert!(r.inputs.len() <= body.len());
});
