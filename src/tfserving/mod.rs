//! TF Serving semantics: which method a call is, what model/version/signature
//! it addresses, and summaries of every tensor, example and signature in the
//! request and response messages.

pub mod dtype;
pub mod exchange;
pub mod names;
mod predict;
pub mod rest;
mod rest_body;
pub mod signature;
pub mod tensor;

use std::collections::HashSet;

use bytes::Bytes;
use prost::Message as _;

pub use exchange::{Exchange, Status, Transport};
pub use signature::{Signature, SignatureMap, TensorSpec};
pub use tensor::{summarize, Kept, TensorSummary, ValueEncoding};

use crate::grpc::message::{Elision, Pruning};

/// Types generated from `proto/` by build.rs.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    pub mod tensorflow {
        include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));
        pub mod serving {
            include!(concat!(env!("OUT_DIR"), "/tensorflow.serving.rs"));
        }
    }
    pub mod tfwire {
        pub mod views {
            include!(concat!(env!("OUT_DIR"), "/tfwire.views.rs"));
        }
    }
}

use pb::tensorflow::serving as tfs;

pub const DEFAULT_SIGNATURE: &str = "serving_default";

/// TF Serving RPCs tfwire understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Predict,
    Classify,
    Regress,
    MultiInference,
    GetModelMetadata,
    GetModelStatus,
    HandleReloadConfigRequest,
    SessionRun,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Predict => "Predict",
            Method::Classify => "Classify",
            Method::Regress => "Regress",
            Method::MultiInference => "MultiInference",
            Method::GetModelMetadata => "GetModelMetadata",
            Method::GetModelStatus => "GetModelStatus",
            Method::HandleReloadConfigRequest => "HandleReloadConfigRequest",
            Method::SessionRun => "SessionRun",
        }
    }

    /// From an HTTP/2 `:path` such as `/tensorflow.serving.PredictionService/Predict`.
    pub fn from_path(path: &str) -> Option<Method> {
        // Nearly every call: one comparison instead of a search for '/'.
        if path == "/tensorflow.serving.PredictionService/Predict" {
            return Some(Method::Predict);
        }
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let m = match (service, method) {
            ("tensorflow.serving.PredictionService", "Predict") => Method::Predict,
            ("tensorflow.serving.PredictionService", "Classify") => Method::Classify,
            ("tensorflow.serving.PredictionService", "Regress") => Method::Regress,
            ("tensorflow.serving.PredictionService", "MultiInference") => Method::MultiInference,
            ("tensorflow.serving.PredictionService", "GetModelMetadata") => {
                Method::GetModelMetadata
            }
            ("tensorflow.serving.ModelService", "GetModelStatus") => Method::GetModelStatus,
            ("tensorflow.serving.ModelService", "HandleReloadConfigRequest") => {
                Method::HandleReloadConfigRequest
            }
            ("tensorflow.serving.SessionService", "SessionRun") => Method::SessionRun,
            _ => return None,
        };
        Some(m)
    }

    /// How the request and response messages of a call to `path` may be
    /// kept: Predict's tensors are summarised from their field prefixes, so
    /// their values need not be kept.
    pub fn pruning(path: &str) -> Option<(Pruning, Pruning)> {
        // What `from_path` maps to Predict, compared without splitting.
        (path == "/tensorflow.serving.PredictionService/Predict")
            .then_some((tensor::PREDICT_REQUEST, tensor::PREDICT_RESPONSE))
    }

    /// Methods whose model_spec names a signature (empty = serving_default).
    fn uses_signature(self) -> bool {
        matches!(self, Method::Predict | Method::Classify | Method::Regress)
    }
}

/// What the messages of one exchange say, method by method.
#[derive(Debug, Default, Clone)]
pub struct Decoded {
    pub model: Option<String>,
    pub version: Option<i64>,
    pub version_label: Option<String>,
    pub signature: Option<String>,
    pub inputs: Vec<TensorSummary>,
    pub outputs: Vec<TensorSummary>,
    pub output_filter: Vec<String>,
    pub examples: Option<u64>,
    pub tasks: Vec<String>,
    pub signatures: Option<SignatureMap>,
    pub metadata_fields: Vec<String>,
    pub model_status: Option<Vec<exchange::VersionStatus>>,
    pub results: Option<u64>,
    /// The response's model_spec (what the server resolved).
    pub resolved_version: Option<i64>,
    pub resolved_signature: Option<String>,
    pub notes: Vec<String>,
}

fn spec_fields(d: &mut Decoded, spec: Option<&tfs::ModelSpec>, method: Method) {
    spec_fields_of(d, spec.map(predict::Spec::from), method);
}

fn spec_fields_of(d: &mut Decoded, spec: Option<predict::Spec<'_>>, method: Method) {
    let Some(spec) = spec else {
        d.notes.push("request has no model_spec".to_string());
        return;
    };
    d.model = Some(spec.name.to_string());
    d.version = spec.version;
    d.version_label = spec.version_label.map(str::to_string);
    if method.uses_signature() {
        d.signature = Some(if spec.signature_name.is_empty() {
            DEFAULT_SIGNATURE.to_string()
        } else {
            spec.signature_name.to_string()
        });
    }
}

fn resolved(d: &mut Decoded, spec: Option<&tfs::ModelSpec>) {
    resolved_of(d, spec.map(predict::Spec::from));
}

fn resolved_of(d: &mut Decoded, spec: Option<predict::Spec<'_>>) {
    if let Some(spec) = spec {
        if let Some(v) = spec.version {
            d.resolved_version = Some(v);
        }
        if !spec.signature_name.is_empty() {
            d.resolved_signature = Some(spec.signature_name.to_string());
        }
    }
}

fn tensors<K: AsRef<str>, V: AsRef<[u8]>>(
    map: impl IntoIterator<Item = (K, V)>,
    kept: Kept<'_>,
) -> Vec<TensorSummary> {
    let mut v: Vec<TensorSummary> = map
        .into_iter()
        .map(|(k, b)| tensor::summarize_kept(k.as_ref(), b.as_ref(), false, kept))
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn count_examples(input: Option<&tfs::Input>) -> Option<u64> {
    match input?.kind.as_ref()? {
        tfs::input::Kind::ExampleList(l) => Some(l.examples.len() as u64),
        tfs::input::Kind::ExampleListWithContext(l) => Some(l.examples.len() as u64),
    }
}

/// Describes why a message did not decode, with a hint when it is not protobuf at all.
fn undecodable(what: &str, data: &[u8], err: &prost::DecodeError) -> String {
    let trimmed = data
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .copied()
        .next();
    if matches!(trimmed, Some(b'{') | Some(b'[')) && std::str::from_utf8(data).is_ok() {
        format!("{what} is JSON text, not protobuf")
    } else {
        format!("{what} is not a valid protobuf message ({err})")
    }
}

/// Decodes the request message of `method`.
pub fn decode_request(method: Method, data: Bytes, d: &mut Decoded) {
    decode_request_kept(method, &data, &[], d);
}

/// [`decode_request`] of a kept message with payloads left out.
pub fn decode_request_kept(method: Method, data: &Bytes, elided: &[Elision], d: &mut Decoded) {
    let kept = Kept::new(data, elided);
    macro_rules! decode {
        ($t:ty) => {
            match <$t>::decode(data.clone()) {
                Ok(m) => m,
                Err(e) => {
                    d.notes.push(undecodable("request message", data, &e));
                    return;
                }
            }
        };
    }
    match method {
        Method::Predict => {
            if let Some(m) = predict::request(data) {
                spec_fields_of(d, m.spec, method);
                d.inputs = tensors(m.tensors, kept);
                d.output_filter = m.output_filter.iter().map(|s| s.to_string()).collect();
                return;
            }
            let m = decode!(pb::tfwire::views::PredictRequestView);
            spec_fields(d, m.model_spec.as_ref(), method);
            d.inputs = tensors(m.inputs, kept);
            d.output_filter = m.output_filter;
        }
        Method::Classify => {
            let m = decode!(tfs::ClassificationRequest);
            spec_fields(d, m.model_spec.as_ref(), method);
            d.examples = count_examples(m.input.as_ref());
        }
        Method::Regress => {
            let m = decode!(tfs::RegressionRequest);
            spec_fields(d, m.model_spec.as_ref(), method);
            d.examples = count_examples(m.input.as_ref());
        }
        Method::MultiInference => {
            let m = decode!(tfs::MultiInferenceRequest);
            if let Some(first) = m.tasks.first() {
                // All tasks must address one model (multi_inference.cc).
                spec_fields(d, first.model_spec.as_ref(), method);
            }
            d.tasks = m
                .tasks
                .iter()
                .map(|t| {
                    let sig = t
                        .model_spec
                        .as_ref()
                        .map(|s| s.signature_name.as_str())
                        .filter(|s| !s.is_empty())
                        .unwrap_or(DEFAULT_SIGNATURE);
                    format!("{sig} ({})", t.method_name)
                })
                .collect();
            d.examples = count_examples(m.input.as_ref());
        }
        Method::GetModelMetadata => {
            let m = decode!(tfs::GetModelMetadataRequest);
            spec_fields(d, m.model_spec.as_ref(), method);
            d.metadata_fields = m.metadata_field;
        }
        Method::GetModelStatus => {
            let m = decode!(tfs::GetModelStatusRequest);
            spec_fields(d, m.model_spec.as_ref(), method);
        }
        Method::HandleReloadConfigRequest | Method::SessionRun => {}
    }
}

/// Decodes what arrived of a request message that was cut short (the
/// stream was reset before the client sent all of it): Predict only, since
/// its model_spec and tensor headers come first on the wire.
pub fn decode_request_prefix(method: Method, data: &[u8], d: &mut Decoded) {
    decode_request_prefix_kept(method, data, &[], d);
}

/// [`decode_request_prefix`] of a kept message with payloads left out.
pub fn decode_request_prefix_kept(
    method: Method,
    data: &[u8],
    elided: &[Elision],
    d: &mut Decoded,
) {
    use tensor::{Field, Wire};
    let kept = Kept::new(data, elided);
    if method != Method::Predict {
        return;
    }
    let mut w = Wire::new_partial(data);
    while let Some(Ok((num, field))) = w.next() {
        match (num, field) {
            (1, Field::Bytes(b)) => {
                if let Ok(spec) = tfs::ModelSpec::decode(b) {
                    spec_fields(d, Some(&spec), method);
                }
            }
            (2, Field::Bytes(entry))
            | (
                2,
                Field::Truncated {
                    available: entry, ..
                },
            ) => {
                let mut name = None;
                let mut ew = Wire::new_partial(entry);
                while let Some(Ok((n, f))) = ew.next() {
                    match (n, f) {
                        (1, Field::Bytes(k)) => {
                            name = Some(String::from_utf8_lossy(k).into_owned())
                        }
                        (2, Field::Bytes(v)) => d.inputs.push(tensor::summarize_kept(
                            name.as_deref().unwrap_or(""),
                            v,
                            false,
                            kept,
                        )),
                        (2, Field::Truncated { available, .. }) => {
                            d.inputs.push(tensor::summarize_kept(
                                name.as_deref().unwrap_or(""),
                                available,
                                true,
                                kept,
                            ))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    d.inputs.sort_by(|a, b| a.name.cmp(&b.name));
}

/// Field numbers present at the top level of a message, in first-seen
/// order, each once. Deduplicated through a bit set for the
/// usual small numbers and a hash set past them: a scan of the list per
/// field was quadratic in a message of many distinct field numbers.
fn top_fields(b: &[u8]) -> Option<Vec<u32>> {
    let mut w = tensor::Wire::new(b);
    let mut v = Vec::new();
    let mut low = 0u64;
    let mut high: HashSet<u32> = HashSet::new();
    while let Some(item) = w.next() {
        let (n, _) = item.ok()?;
        let fresh = if n < 64 {
            let had = low & (1 << n) != 0;
            low |= 1 << n;
            !had
        } else {
            high.insert(n)
        };
        if fresh {
            v.push(n);
        }
    }
    Some(v)
}

/// Why an inferred method is left unnamed: the two requests are identical.
pub const AMBIGUOUS_STATUS_OR_METADATA: &str =
    "GetModelStatus or GetModelMetadata without metadata_field: the requests look the same on the wire";

/// Infers the method of a call whose `:path` was not seen (capture started
/// mid-connection) from the shape of its messages. Returns the method and
/// why it was chosen; None when nothing fits well.
pub fn infer_method(
    request: Option<&[u8]>,
    response: Option<&[u8]>,
    message: Option<&str>,
) -> Option<(Method, String)> {
    // Some server messages name the method outright.
    if let Some(m) = message {
        if m.starts_with("GetModelMetadataRequest") || m.starts_with("Metadata field ") {
            return Some((
                Method::GetModelMetadata,
                "the server's message names it".into(),
            ));
        }
    }
    let req = request?;
    let fields = top_fields(req)?;
    let only = |allowed: &[u32]| fields.iter().all(|f| allowed.contains(f));
    // MultiInference: tasks naming inference methods.
    if let Ok(m) = tfs::MultiInferenceRequest::decode(req) {
        if !m.tasks.is_empty()
            && m.tasks
                .iter()
                .all(|t| t.method_name.starts_with("tensorflow/serving/"))
        {
            return Some((
                Method::MultiInference,
                "tasks with inference method names".into(),
            ));
        }
    }
    if only(&[1, 2]) {
        if let Ok(m) = tfs::GetModelMetadataRequest::decode(req) {
            if m.model_spec.as_ref().is_some_and(|s| !s.name.is_empty())
                && !m.metadata_field.is_empty()
                && m.metadata_field.iter().all(|f| f == "signature_def")
            {
                return Some((
                    Method::GetModelMetadata,
                    "metadata_field \"signature_def\"".into(),
                ));
            }
        }
    }
    if fields.contains(&2) && only(&[1, 2, 3, 5, 6, 7]) {
        if let Ok(m) = pb::tfwire::views::PredictRequestView::decode(req) {
            let good = !m.inputs.is_empty()
                && m.inputs.values().all(|t| {
                    let s = summarize("", t);
                    s.dtype.is_some_and(|d| d != "DT_INVALID")
                        && !s.problems.iter().any(|p| p.contains("not valid protobuf"))
                });
            if good {
                return Some((Method::Predict, "a map of TensorProtos".into()));
            }
        }
    }
    if only(&[1, 2]) {
        if let Ok(m) = tfs::ClassificationRequest::decode(req) {
            if count_examples(m.input.as_ref()).is_some_and(|n| n > 0) {
                // Classify and Regress requests are identical on the wire;
                // the response or the signature name tells them apart.
                let by_response = response.and_then(|r| {
                    let cls = tfs::ClassificationResponse::decode(r)
                        .ok()
                        .and_then(|c| c.result)
                        .is_some_and(|c| !c.classifications.is_empty());
                    let reg = tfs::RegressionResponse::decode(r)
                        .ok()
                        .and_then(|c| c.result)
                        .is_some_and(|c| !c.regressions.is_empty());
                    match (cls, reg) {
                        (true, false) => Some(Method::Classify),
                        (false, true) => Some(Method::Regress),
                        _ => None,
                    }
                });
                let sig = m.model_spec.map(|s| s.signature_name).unwrap_or_default();
                return Some(match by_response {
                    Some(method) => (
                        method,
                        "tf.Examples in the request; the response's result type".into(),
                    ),
                    None if sig.contains("regress") => (
                        Method::Regress,
                        "tf.Examples and a regress signature name".into(),
                    ),
                    None => (
                        Method::Classify,
                        "tf.Examples in the request (Regress has the same request format)".into(),
                    ),
                });
            }
        }
    }
    if only(&[1]) {
        if let Ok(m) = tfs::GetModelStatusRequest::decode(req) {
            if m.model_spec.is_some_and(|s| !s.name.is_empty()) {
                let metadata = response.is_some_and(|r| {
                    tfs::GetModelMetadataResponse::decode(r).is_ok_and(|m| !m.metadata.is_empty())
                });
                // A status response: version entries with real states, and no
                // metadata map (field 2).
                let status = response.is_some_and(|r| {
                    top_fields(r).is_some_and(|f| !f.contains(&2))
                        && tfs::GetModelStatusResponse::decode(r).is_ok_and(|s| {
                            !s.model_version_status.is_empty()
                                && s.model_version_status.iter().all(|v| {
                                    tfs::model_version_status::State::try_from(v.state).is_ok()
                                })
                        })
                });
                return Some(if metadata {
                    (
                        Method::GetModelMetadata,
                        "a model_spec, and a metadata response".into(),
                    )
                } else if status {
                    (
                        Method::GetModelStatus,
                        "a model_spec, and a model status response".into(),
                    )
                } else {
                    (Method::GetModelStatus, AMBIGUOUS_STATUS_OR_METADATA.into())
                });
            }
        }
    }
    None
}

/// The status code a TF Serving message comes with (TFSERVING.md §3), for
/// responses whose `grpc-status` could not be decoded.
pub fn code_for_message(message: &str) -> Option<u32> {
    let m = message.trim();
    Some(
        if m.starts_with("Servable not found") || m.starts_with("Could not find") {
            5
        } else if m.starts_with("Serving signature key \"") || m.starts_with("Function \"") {
            9
        } else if m.starts_with("The batch scheduling queue")
            || m.starts_with("Model labels does not init yet")
        {
            14
        } else if m.contains("message larger than max") {
            8
        } else if m.starts_with("Expected prediction signature method_name") {
            13
        } else if m.starts_with("Unsupported signature method_name") {
            12
        } else if m.starts_with("Predict internal error") {
            2
        } else if crate::diagnose::message::parse(&crate::diagnose::message::core(m).text)
            != crate::diagnose::message::Finding::Other
        {
            3
        } else {
            return None;
        },
    )
}

/// Decodes the response message of `method`.
pub fn decode_response(method: Method, data: Bytes, d: &mut Decoded) {
    decode_response_kept(method, &data, &[], d);
}

/// [`decode_response`] of a kept message with payloads left out.
pub fn decode_response_kept(method: Method, data: &Bytes, elided: &[Elision], d: &mut Decoded) {
    let kept = Kept::new(data, elided);
    macro_rules! decode {
        ($t:ty) => {
            match <$t>::decode(data.clone()) {
                Ok(m) => m,
                Err(e) => {
                    d.notes.push(undecodable("response message", data, &e));
                    return;
                }
            }
        };
    }
    match method {
        Method::Predict => {
            if let Some(m) = predict::response(data) {
                resolved_of(d, m.spec);
                d.outputs = tensors(m.tensors, kept);
                return;
            }
            let m = decode!(pb::tfwire::views::PredictResponseView);
            resolved(d, m.model_spec.as_ref());
            d.outputs = tensors(m.outputs, kept);
        }
        Method::Classify => {
            let m = decode!(tfs::ClassificationResponse);
            resolved(d, m.model_spec.as_ref());
            d.results = m.result.map(|r| r.classifications.len() as u64);
        }
        Method::Regress => {
            let m = decode!(tfs::RegressionResponse);
            resolved(d, m.model_spec.as_ref());
            d.results = m.result.map(|r| r.regressions.len() as u64);
        }
        Method::MultiInference => {
            let m = decode!(tfs::MultiInferenceResponse);
            d.results = Some(m.results.len() as u64);
            if let Some(r) = m.results.first() {
                resolved(d, r.model_spec.as_ref());
            }
        }
        Method::GetModelMetadata => {
            let m = decode!(tfs::GetModelMetadataResponse);
            resolved(d, m.model_spec.as_ref());
            if let Some(any) = m.metadata.get("signature_def") {
                if !any.type_url.ends_with("tensorflow.serving.SignatureDefMap") {
                    d.notes.push(format!(
                        "signature_def metadata has unexpected type {}",
                        any.type_url
                    ));
                }
                match tfs::SignatureDefMap::decode(any.value.as_slice()) {
                    Ok(map) => d.signatures = Some(signature::map_from_proto(&map.signature_def)),
                    Err(e) => d
                        .notes
                        .push(format!("signature_def metadata does not decode ({e})")),
                }
            }
        }
        Method::GetModelStatus => {
            let m = decode!(tfs::GetModelStatusResponse);
            d.model_status = Some(
                m.model_version_status
                    .iter()
                    .map(|s| exchange::VersionStatus {
                        version: s.version,
                        state: tfs::model_version_status::State::try_from(s.state)
                            .map(|st| st.as_str_name().to_string())
                            .unwrap_or_else(|_| format!("STATE_{}", s.state)),
                        error_code: s.status.as_ref().map(|st| st.error_code),
                        error_message: s
                            .status
                            .as_ref()
                            .map(|st| st.error_message.clone())
                            .filter(|m| !m.is_empty()),
                    })
                    .collect(),
            );
        }
        Method::HandleReloadConfigRequest | Method::SessionRun => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of varint fields with these numbers (value 1 each).
    fn varint_fields(numbers: impl IntoIterator<Item = u32>) -> Vec<u8> {
        let mut b = Vec::new();
        for n in numbers {
            let mut key = u64::from(n) << 3;
            while key >= 0x80 {
                b.push(key as u8 | 0x80);
                key >>= 7;
            }
            b.push(key as u8);
            b.push(1);
        }
        b
    }

    #[test]
    fn top_fields_lists_each_number_once_in_first_seen_order() {
        let by_scan = |b: &[u8]| -> Option<Vec<u32>> {
            let mut v = Vec::new();
            let mut w = tensor::Wire::new(b);
            while let Some(item) = w.next() {
                let (n, _) = item.ok()?;
                if !v.contains(&n) {
                    v.push(n);
                }
            }
            Some(v)
        };
        let mut messages = vec![
            Vec::new(),
            varint_fields([1, 2, 1, 3, 2]),
            varint_fields([63, 64, 1, 64, 63, 65, 1 << 28, 1, 1 << 28]),
            varint_fields((0..3000).map(|i| (i * 37) % 500 + 1)),
            varint_fields((0..3000).rev().map(|i| i % 130 + 1)),
        ];
        // Not valid protobuf at the end: no field list at all.
        let mut bad = varint_fields([1, 2]);
        bad.push(0xff);
        messages.push(bad);
        for m in &messages {
            assert_eq!(top_fields(m), by_scan(m), "{m:?}");
        }
        assert_eq!(top_fields(&messages[1]), Some(vec![1, 2, 3]));
    }

    #[test]
    fn top_fields_of_200k_distinct_numbers_is_not_quadratic() {
        let m = varint_fields(1..=200_000);
        let start = std::time::Instant::now();
        let f = top_fields(&m).expect("valid");
        assert_eq!(f.len(), 200_000);
        assert_eq!(f[199_999], 200_000);
        assert!(start.elapsed().as_secs() < 30, "{:?}", start.elapsed());
    }

    #[test]
    fn pruning_is_for_predict_only() {
        for path in [
            "/tensorflow.serving.PredictionService/Predict",
            "/tensorflow.serving.PredictionService/Classify",
            "/tensorflow.serving.PredictionService/Predict/",
            "tensorflow.serving.PredictionService/Predict",
        ] {
            assert_eq!(
                Method::pruning(path).is_some(),
                Method::from_path(path) == Some(Method::Predict),
                "{path}"
            );
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            Method::from_path("/tensorflow.serving.PredictionService/Predict"),
            Some(Method::Predict)
        );
        assert_eq!(
            Method::from_path("/tensorflow.serving.ModelService/GetModelStatus"),
            Some(Method::GetModelStatus)
        );
        assert_eq!(Method::from_path("/grpc.health.v1.Health/Check"), None);
        assert_eq!(Method::from_path("garbage"), None);
    }

    #[test]
    fn predict_request_view_reads_generated_message() {
        let mut req = tfs::PredictRequest {
            model_spec: Some(tfs::ModelSpec {
                name: "fraud".into(),
                version_choice: Some(tfs::model_spec::VersionChoice::Version(1)),
                signature_name: String::new(),
            }),
            ..Default::default()
        };
        req.inputs.insert(
            "features".into(),
            pb::tensorflow::TensorProto {
                dtype: 2,
                tensor_shape: Some(pb::tensorflow::TensorShapeProto {
                    dim: vec![
                        pb::tensorflow::tensor_shape_proto::Dim {
                            size: 1,
                            name: String::new(),
                        },
                        pb::tensorflow::tensor_shape_proto::Dim {
                            size: 3,
                            name: String::new(),
                        },
                    ],
                    unknown_rank: false,
                }),
                double_val: vec![1.0, 2.0, 3.0],
                ..Default::default()
            },
        );
        let bytes = Bytes::from(req.encode_to_vec());
        let mut d = Decoded::default();
        decode_request(Method::Predict, bytes, &mut d);
        assert_eq!(d.model.as_deref(), Some("fraud"));
        assert_eq!(d.version, Some(1));
        assert_eq!(d.signature.as_deref(), Some("serving_default"));
        assert_eq!(d.inputs.len(), 1);
        assert_eq!(d.inputs[0].dtype, Some("DT_DOUBLE"));
        assert_eq!(d.inputs[0].shape, Some(vec![1, 3]));
        assert_eq!(d.inputs[0].values, Some(3));
        assert_eq!(d.inputs[0].fields, vec!["double_val"]);
    }

    /// Pruned messages (gRPC layer, see `grpc::message::Pruning`) must
    /// decode exactly as the whole messages do, however the bytes arrive.
    mod pruned {
        use super::*;
        use crate::grpc::message::{Deframer, Encoding, Limits, Message};
        use pb::tensorflow::{tensor_shape_proto::Dim, TensorProto, TensorShapeProto};

        fn tensor(dtype: i32, dims: &[i64]) -> TensorProto {
            TensorProto {
                dtype,
                tensor_shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&size| Dim {
                            size,
                            name: String::new(),
                        })
                        .collect(),
                    unknown_rank: false,
                }),
                ..Default::default()
            }
        }

        /// A request with every kind of payload the pruning leaves out.
        fn request() -> Vec<u8> {
            let mut req = tfs::PredictRequest {
                model_spec: Some(tfs::ModelSpec {
                    name: "big".into(),
                    version_choice: Some(tfs::model_spec::VersionChoice::Version(3)),
                    signature_name: "sig".into(),
                }),
                output_filter: vec!["out".into()],
                ..Default::default()
            };
            let mut content = tensor(1, &[2, 50]);
            content.tensor_content = (0..400u32)
                .map(|i| (i * 37 % 251) as u8)
                .collect::<Vec<u8>>()
                .into();
            req.inputs.insert("content".into(), content);
            let mut floats = tensor(1, &[3, 10]);
            floats.float_val = (0..30).map(|i| i as f32 * 0.5).collect();
            req.inputs.insert("floats".into(), floats);
            let mut ints = tensor(3, &[40]);
            ints.int_val = (0..40).map(|i| i * 1000 - 7).collect();
            req.inputs.insert("ints".into(), ints);
            let mut strings = tensor(7, &[3]);
            strings.tensor_content = vec![2, 0, 3, b'a', b'b', b'x', b'y', b'z'].into();
            req.inputs.insert("strings".into(), strings);
            let mut zeros = tensor(7, &[200]);
            zeros.tensor_content = vec![0; 200].into();
            req.inputs.insert("zero_strings".into(), zeros);
            let mut bad = tensor(7, &[2]);
            bad.tensor_content = vec![5, 1, b'a'].into();
            req.inputs.insert("bad_strings".into(), bad);
            let mut items = tensor(7, &[2]);
            items.string_val = vec![vec![b'q'; 90].into(), b"r".to_vec().into()];
            req.inputs.insert("items".into(), items);
            let mut short = tensor(2, &[5]);
            short.tensor_content = vec![0; 24].into();
            req.inputs.insert("short".into(), short);
            req.encode_to_vec()
        }

        fn framed(flag: u8, payload: &[u8]) -> Vec<u8> {
            let mut v = vec![flag];
            v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            v.extend_from_slice(payload);
            v
        }

        /// Deframes `wire` fed in `chunk`-byte pieces, losing `loss`
        /// (offset, length) and stopping after `cut` bytes.
        fn deframe(
            wire: &[u8],
            prune: Option<Pruning>,
            chunk: usize,
            loss: Option<(usize, usize)>,
            cut: usize,
        ) -> Message {
            let mut d = Deframer::new(Limits::default());
            if let Some(p) = prune {
                // Pruned whatever their size, to test small messages.
                d.prune(Pruning { min_len: 0, ..p });
            }
            d.encoding = Encoding::Gzip;
            let wire = &wire[..cut.min(wire.len())];
            let (lost_at, lost_len) = loss.unwrap_or((wire.len(), 0));
            let mut pos = 0;
            while pos < wire.len() {
                if pos == lost_at {
                    let n = lost_len.min(wire.len() - pos);
                    d.lost(n as u64);
                    pos += n;
                    continue;
                }
                let end = (pos + chunk).min(wire.len());
                let end = if pos < lost_at { end.min(lost_at) } else { end };
                d.push(&wire[pos..end]);
                pos = end;
            }
            d.finish();
            d.messages.remove(0)
        }

        /// What the exchange takes from a request (or response) message.
        fn decoded(m: &Message, response: bool) -> String {
            let mut d = Decoded::default();
            if response {
                decode_response_kept(Method::Predict, &m.data, &m.elided, &mut d);
            } else if m.complete {
                decode_request_kept(Method::Predict, &m.data, &m.elided, &mut d);
            } else {
                decode_request_prefix_kept(Method::Predict, &m.data, &m.elided, &mut d);
            }
            format!("{} {} {:?} {:?}", m.complete, m.seen_len(), m.problem, d)
        }

        fn same(wire: &[u8], chunk: usize, loss: Option<(usize, usize)>, cut: usize) -> Message {
            same_as(wire, tensor::PREDICT_REQUEST, chunk, loss, cut)
        }

        fn same_as(
            wire: &[u8],
            pruning: Pruning,
            chunk: usize,
            loss: Option<(usize, usize)>,
            cut: usize,
        ) -> Message {
            let response = pruning.map == tensor::PREDICT_RESPONSE.map;
            let whole = deframe(wire, None, chunk, loss, cut);
            let pruned = deframe(wire, Some(pruning), chunk, loss, cut);
            assert!(whole.elided.is_empty());
            assert_eq!(
                decoded(&pruned, response),
                decoded(&whole, response),
                "chunk {chunk} loss {loss:?} cut {cut}"
            );
            pruned
        }

        #[test]
        fn responses_decode_as_whole() {
            let mut resp = tfs::PredictResponse {
                model_spec: Some(tfs::ModelSpec {
                    name: "big".into(),
                    version_choice: Some(tfs::model_spec::VersionChoice::Version(3)),
                    signature_name: String::new(),
                }),
                ..Default::default()
            };
            let mut scores = tensor(1, &[4, 25]);
            scores.float_val = vec![0.25; 100];
            resp.outputs.insert("scores".into(), scores);
            let mut ids = tensor(9, &[100]);
            ids.tensor_content = vec![1; 800].into();
            resp.outputs.insert("ids".into(), ids);
            let body = resp.encode_to_vec();
            let wire = framed(0, &body);
            for chunk in 1..wire.len() {
                let m = same_as(&wire, tensor::PREDICT_RESPONSE, chunk, None, usize::MAX);
                assert!(m.data.len() < 100);
            }
            let m = same_as(&wire, tensor::PREDICT_RESPONSE, 9, None, usize::MAX);
            let mut d = Decoded::default();
            decode_response_kept(Method::Predict, &m.data, &m.elided, &mut d);
            let values: Vec<_> = d.outputs.iter().map(|t| (t.values, t.bytes)).collect();
            assert_eq!(values, vec![(Some(100), 811), (Some(100), 415)]);
            assert_eq!(d.resolved_version, Some(3));
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for _ in 0..2000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mut b = body.clone();
                let i = (x % b.len() as u64) as usize;
                b[i] = (x >> 32) as u8;
                same_as(
                    &framed(0, &b),
                    tensor::PREDICT_RESPONSE,
                    1 + (x >> 40) as usize % 64,
                    None,
                    usize::MAX,
                );
            }
        }

        #[test]
        fn decodes_as_whole_at_every_split() {
            let wire = framed(0, &request());
            for chunk in 1..wire.len() {
                let m = same(&wire, chunk, None, usize::MAX);
                assert!(m.complete && m.data.len() < wire.len() / 2);
                assert_eq!(m.seen_len(), wire.len() as u64 - 5);
            }
            let m = same(&wire, 7, None, usize::MAX);
            let mut d = Decoded::default();
            decode_request_kept(Method::Predict, &m.data, &m.elided, &mut d);
            let by_name = |n: &str| {
                let t = d.inputs.iter().find(|t| t.name == n).expect("input");
                (t.values, t.encoding, t.problems.len())
            };
            assert_eq!(d.model.as_deref(), Some("big"));
            assert_eq!(d.output_filter, vec!["out"]);
            assert_eq!(
                by_name("content"),
                (Some(100), ValueEncoding::TensorContent, 0)
            );
            assert_eq!(by_name("floats"), (Some(30), ValueEncoding::Typed, 0));
            assert_eq!(by_name("ints"), (Some(40), ValueEncoding::Typed, 0));
            assert_eq!(
                by_name("strings"),
                (Some(3), ValueEncoding::TensorContent, 0)
            );
            assert_eq!(
                by_name("zero_strings"),
                (Some(200), ValueEncoding::TensorContent, 0)
            );
            assert_eq!(
                by_name("bad_strings"),
                (None, ValueEncoding::TensorContent, 1)
            );
            assert_eq!(by_name("items"), (Some(2), ValueEncoding::Typed, 0));
            assert_eq!(by_name("short").2, 1);
            let content = d.inputs.iter().find(|t| t.name == "content");
            assert!(content.is_some_and(|t| t.bytes > 400));
        }

        #[test]
        fn cut_short_and_lost_bytes_decode_as_whole() {
            let wire = framed(0, &request());
            for cut in 5..wire.len() {
                let m = same(&wire, 13, None, cut);
                assert!(!m.complete);
            }
            for at in (5..wire.len()).step_by(3) {
                for len in [1, 4, 40, 300] {
                    same(&wire, 64, Some((at, len)), usize::MAX);
                }
            }
        }

        #[test]
        fn mutated_messages_decode_as_whole() {
            let body = request();
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            let mut rand = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let runs: usize = std::env::var("TFWIRE_MUTATIONS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(3000);
            for _ in 0..runs {
                let mut b = body.clone();
                for _ in 0..1 + rand() % 3 {
                    let i = (rand() % b.len() as u64) as usize;
                    match rand() % 4 {
                        0 => b.insert(i, rand() as u8),
                        1 => {
                            b.remove(i);
                        }
                        _ => b[i] = rand() as u8,
                    }
                }
                let wire = framed(0, &b);
                let chunk = 1 + (rand() % 50) as usize;
                let cut = if rand() % 4 == 0 {
                    5 + (rand() % (wire.len() as u64 - 5)) as usize
                } else {
                    usize::MAX
                };
                same(&wire, chunk, None, cut);
            }
        }

        #[test]
        fn compressed_messages_are_pruned_as_they_decompress() {
            use std::io::Write;
            let body = request();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&body).expect("gz");
            let gz = gz.finish().expect("gz");
            let wire = framed(1, &gz);
            let m = same(&wire, 100, None, usize::MAX);
            assert!(m.complete && m.data.len() < body.len() / 2);
            assert_eq!(m.seen_len(), body.len() as u64);
            // Cut short: the compressed bytes are kept as they came.
            let m = same(&wire, 100, None, wire.len() - 10);
            assert!(!m.complete && m.elided.is_empty());
            // Corrupt: fails the same way.
            let mut bad = gz.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x55;
            let m = same(&framed(1, &bad), 100, None, usize::MAX);
            assert!(!m.complete);
            // Mutated protobuf inside the compression.
            let mut x: u64 = 0x1234_5678_9abc_def1;
            for _ in 0..300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mut b = body.clone();
                let i = (x % b.len() as u64) as usize;
                b[i] = (x >> 32) as u8;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&b).expect("gz");
                same(
                    &framed(1, &gz.finish().expect("gz")),
                    4096,
                    None,
                    usize::MAX,
                );
            }
        }

        #[test]
        fn json_like_messages_are_kept_whole() {
            let body = request();
            // Starts like JSON: the "is JSON text" hint reads every byte.
            let mut json = b" [".to_vec();
            json.extend_from_slice(&body);
            let m = same(&framed(0, &json), 100, None, usize::MAX);
            assert!(m.elided.is_empty());
        }

        #[test]
        fn only_large_messages_are_pruned() {
            let small = framed(0, &request());
            let mut d = Deframer::new(Limits::default());
            d.prune(tensor::PREDICT_REQUEST);
            d.push(&small);
            assert!(d.messages[0].elided.is_empty());

            let mut req = tfs::PredictRequest::default();
            let mut t = tensor(1, &[256, 256]);
            t.tensor_content = vec![7; 256 * 256 * 4].into();
            req.inputs.insert("image".into(), t);
            let body = req.encode_to_vec();
            let wire = framed(0, &body);
            let mut d = Deframer::new(Limits::default());
            d.prune(tensor::PREDICT_REQUEST);
            for chunk in wire.chunks(16384) {
                d.push(chunk);
            }
            let m = &d.messages[0];
            assert!(m.complete && m.data.len() < 64);
            assert_eq!(m.elided.len(), 1);
            let mut got = Decoded::default();
            decode_request_kept(Method::Predict, &m.data, &m.elided, &mut got);
            let mut want = Decoded::default();
            decode_request(Method::Predict, Bytes::from(body), &mut want);
            assert_eq!(format!("{got:?}"), format!("{want:?}"));
            assert_eq!(got.inputs[0].values, Some(256 * 256));
        }

        #[test]
        fn messages_over_the_limit_are_not_kept() {
            let body = request();
            let mut d = Deframer::new(Limits {
                max_message: 100,
                ..Limits::default()
            });
            d.prune(tensor::PREDICT_REQUEST);
            d.push(&framed(0, &body));
            assert!(!d.messages[0].complete && d.messages[0].data.is_empty());
            assert_eq!(d.messages[0].seen_len(), 0);
        }
    }

    #[test]
    fn json_body_is_recognised() {
        let mut d = Decoded::default();
        decode_request(
            Method::Predict,
            Bytes::from_static(br#"{"instances": [[1.0, 2.0]]}"#),
            &mut d,
        );
        assert_eq!(d.notes, vec!["request message is JSON text, not protobuf"]);
    }
}
