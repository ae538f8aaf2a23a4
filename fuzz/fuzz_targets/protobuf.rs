//! TF Serving protobuf decoding: the bytes as the request and as the
//! response of every method, and as a TensorProto.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tfwire::tfserving::{decode_request, decode_response, summarize, Method};

const METHODS: [Method; 8] = [
    Method::Predict,
    Method::Classify,
    Method::Regress,
    Method::MultiInference,
    Method::GetModelMetadata,
    Method::GetModelStatus,
    Method::HandleReloadConfigRequest,
    Method::SessionRun,
];

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    for m in METHODS {
        let mut d = Default::default();
        decode_request(m, bytes.clone(), &mut d);
        let mut d = Default::default();
        decode_response(m, bytes.clone(), &mut d);
    }
    let t = summarize("t", data);
    assert_eq!(t.bytes, data.len() as u64);
    if let Some(shape) = &t.shape {
        assert!(shape.len() <= 1024, "{} dims kept", shape.len());
    }
});
