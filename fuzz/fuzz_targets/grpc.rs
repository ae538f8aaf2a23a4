//! gRPC length-prefixed message framing with identity, gzip, deflate and
//! unsupported encodings, losses and stream ends; plus grpc-message
//! percent-decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfwire::grpc::{percent_decode, Deframer, Encoding, MessageLimits};
use tfwire_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mode = inp.u8();
    let limits = if mode & 4 == 0 {
        MessageLimits::default()
    } else {
        MessageLimits {
            max_message: 4096,
            max_messages: 4,
            max_decompressed_held: 64 << 10,
        }
    };
    let mut d = Deframer::new(limits);
    d.encoding = match mode & 3 {
        0 => Encoding::Identity,
        1 => Encoding::Gzip,
        2 => Encoding::Deflate,
        _ => Encoding::Unsupported,
    };
    if mode & 8 != 0 {
        let _ = percent_decode(&String::from_utf8_lossy(inp.rest()));
        return;
    }
    while !inp.is_empty() {
        let op = inp.u8();
        let len = inp.u16();
        match op & 3 {
            1 => d.lost(u64::from(len)),
            2 => d.finish(),
            _ => d.push(inp.bytes(usize::from(len))),
        }
        assert!(d.messages.len() <= limits.max_messages);
    }
    d.finish();
    for m in &d.messages {
        assert!(m.data.len() <= limits.max_message);
    }
});
