//! TF Serving semantics: which method a call is, what model/version/signature
//! it addresses, and summaries of every tensor, example and signature in the
//! request and response messages.

pub mod dtype;
pub mod exchange;
pub mod rest;
pub mod signature;
pub mod tensor;

use bytes::Bytes;
use prost::Message as _;

pub use exchange::{Exchange, Status, Transport};
pub use signature::{Signature, SignatureMap, TensorSpec};
pub use tensor::{summarize, TensorSummary, ValueEncoding};

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
    let Some(spec) = spec else {
        d.notes.push("request has no model_spec".to_string());
        return;
    };
    d.model = Some(spec.name.clone());
    match &spec.version_choice {
        Some(tfs::model_spec::VersionChoice::Version(v)) => d.version = Some(*v),
        Some(tfs::model_spec::VersionChoice::VersionLabel(l)) => d.version_label = Some(l.clone()),
        None => {}
    }
    if method.uses_signature() {
        d.signature = Some(if spec.signature_name.is_empty() {
            DEFAULT_SIGNATURE.to_string()
        } else {
            spec.signature_name.clone()
        });
    }
}

fn resolved(d: &mut Decoded, spec: Option<&tfs::ModelSpec>) {
    if let Some(spec) = spec {
        if let Some(tfs::model_spec::VersionChoice::Version(v)) = &spec.version_choice {
            d.resolved_version = Some(*v);
        }
        if !spec.signature_name.is_empty() {
            d.resolved_signature = Some(spec.signature_name.clone());
        }
    }
}

fn tensors(map: impl IntoIterator<Item = (String, Bytes)>) -> Vec<TensorSummary> {
    let mut v: Vec<TensorSummary> = map.into_iter().map(|(k, b)| summarize(&k, &b)).collect();
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
    macro_rules! decode {
        ($t:ty) => {
            match <$t>::decode(data.clone()) {
                Ok(m) => m,
                Err(e) => {
                    d.notes.push(undecodable("request message", &data, &e));
                    return;
                }
            }
        };
    }
    match method {
        Method::Predict => {
            let m = decode!(pb::tfwire::views::PredictRequestView);
            spec_fields(d, m.model_spec.as_ref(), method);
            d.inputs = tensors(m.inputs);
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
    use tensor::{Field, Wire};
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
                        (2, Field::Bytes(v)) => {
                            d.inputs.push(summarize(name.as_deref().unwrap_or(""), v))
                        }
                        (2, Field::Truncated { available, .. }) => d.inputs.push(
                            tensor::summarize_prefix(name.as_deref().unwrap_or(""), available),
                        ),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    d.inputs.sort_by(|a, b| a.name.cmp(&b.name));
}

/// Field numbers present at the top level of a message.
fn top_fields(b: &[u8]) -> Option<Vec<u32>> {
    let mut w = tensor::Wire::new(b);
    let mut v = Vec::new();
    while let Some(item) = w.next() {
        let (n, _) = item.ok()?;
        if !v.contains(&n) {
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
    macro_rules! decode {
        ($t:ty) => {
            match <$t>::decode(data.clone()) {
                Ok(m) => m,
                Err(e) => {
                    d.notes.push(undecodable("response message", &data, &e));
                    return;
                }
            }
        };
    }
    match method {
        Method::Predict => {
            let m = decode!(pb::tfwire::views::PredictResponseView);
            resolved(d, m.model_spec.as_ref());
            d.outputs = tensors(m.outputs);
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
