//! TF Serving's REST API (TFSERVING.md §4): URL routing, the JSON request
//! formats (row "instances" and columnar "inputs"), and the responses.

use serde_json::Value;

use super::exchange::{rfc3339, Status, Transport, VersionStatus};
use super::rest_body::{self, Nest, Reply};
use super::{names, signature, Exchange, TensorSummary, ValueEncoding, DEFAULT_SIGNATURE};
use crate::http1::{Message, StartLine};
use crate::net::ConnInfo;

/// What a REST URL addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    pub method: Option<&'static str>,
    pub model: Option<String>,
    pub version: Option<i64>,
    pub version_label: Option<String>,
    /// Why the URL is not an API call, as TF Serving would answer.
    pub problem: Option<String>,
    /// The URL routes, but its version cannot be used.
    pub version_problem: Option<String>,
}

fn percent_decode(s: &str) -> String {
    crate::grpc::percent_decode(s)
}

/// Routes a request line the way http_rest_api_util.cc does.
pub fn route(http_method: &str, target: &str) -> Route {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let lower = path.to_ascii_lowercase();
    if !lower.starts_with("/v1/") {
        return Route {
            problem: Some(format!(
                "{path} is outside /v1/ (the server answers with an HTML 404 page)"
            )),
            ..Route::default()
        };
    }
    let malformed = || Route {
        problem: Some(format!("Malformed request: {http_method} {path}")),
        ..Route::default()
    };
    let Some(rest) = lower
        .strip_prefix("/v1/models")
        .map(|_| &path["/v1/models".len()..])
    else {
        return malformed();
    };
    match http_method {
        "POST" => {
            // /v1/models/{m}[/versions/{v}|/labels/{l}]:{verb}
            let Some(rest) = rest.strip_prefix('/') else {
                return malformed();
            };
            let Some((head, verb)) = rest.rsplit_once(':') else {
                return malformed();
            };
            // The verb comparison is case-sensitive even though the regex is not.
            let method = match verb {
                "predict" => "Predict",
                "classify" => "Classify",
                "regress" => "Regress",
                _ => return malformed(),
            };
            let mut parts = head.split('/');
            let Some(model) = parts.next().filter(|m| !m.is_empty() && !m.contains(':')) else {
                return malformed();
            };
            let mut r = Route {
                method: Some(method),
                model: Some(percent_decode(model)),
                ..Route::default()
            };
            match (parts.next(), parts.next(), parts.next()) {
                (None, _, _) => {}
                (Some(kind), Some(v), None) if kind.eq_ignore_ascii_case("versions") => {
                    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return malformed();
                    }
                    match v.parse::<i64>() {
                        Ok(n) => r.version = Some(n),
                        // The route matches; the conversion fails and TF
                        // Serving answers 400 with an empty body.
                        Err(_) => {
                            r.version_problem = Some(format!(
                                "version {v} in the URL does not fit a 64-bit integer (TF Serving: \"Failed to convert version\", sent with an empty body)"
                            ))
                        }
                    }
                }
                (Some(kind), Some(l), None)
                    if kind.eq_ignore_ascii_case("labels") && !l.is_empty() =>
                {
                    r.version_label = Some(percent_decode(l))
                }
                _ => return malformed(),
            }
            r
        }
        "GET" => {
            let parts: Vec<&str> = rest.split('/').skip(1).collect();
            if rest.is_empty() || rest == "/" {
                return Route {
                    problem: Some("Missing model name in request.".into()),
                    ..Route::default()
                };
            }
            if parts
                .first()
                .is_some_and(|m| m.is_empty() || m.contains(':'))
            {
                return malformed();
            }
            let mut r = Route {
                method: Some("GetModelStatus"),
                model: parts.first().map(|m| percent_decode(m)),
                ..Route::default()
            };
            let mut i = 1;
            if let (Some(kind), Some(v)) = (parts.get(i), parts.get(i + 1)) {
                if kind.eq_ignore_ascii_case("versions") {
                    match v.parse::<i64>() {
                        Ok(n) => r.version = Some(n),
                        Err(_) => return malformed(),
                    }
                    i += 2;
                } else if kind.eq_ignore_ascii_case("labels") {
                    r.version_label = Some(percent_decode(v));
                    i += 2;
                }
            }
            match parts.get(i) {
                None => {}
                // The `metadata` suffix is matched case-sensitively.
                Some(&"metadata") if parts.len() == i + 1 => r.method = Some("GetModelMetadata"),
                Some(_) => return malformed(),
            }
            r
        }
        _ => malformed(),
    }
}

fn tensor(name: &str, n: &Nest) -> TensorSummary {
    TensorSummary {
        name: name.to_string(),
        // The server builds the tensor with the signature's dtype; without
        // the signature it is unknown (the JSON types are in `json`).
        dtype: None,
        dtype_code: None,
        shape: Some(n.shape.clone()),
        values: Some(n.values),
        encoding: ValueEncoding::Json,
        fields: Vec::new(),
        bytes: 0,
        problems: if n.ragged {
            vec!["ragged nesting: lists at one level differ in length".to_string()]
        } else {
            Vec::new()
        },
        json: Some(n.kinds.clone()),
    }
}

/// Inputs of a predict body, by the rules of json_tensor.cc.
#[derive(Debug, Default)]
pub struct RestRequest {
    pub signature: Option<String>,
    pub format: Option<&'static str>,
    pub inputs: Vec<TensorSummary>,
    pub examples: Option<u64>,
    pub notes: Vec<String>,
    /// The body is not JSON at all; the parser's error.
    pub json_error: Option<String>,
}

pub fn parse_request_body(method: Option<&str>, body: &[u8]) -> RestRequest {
    let mut r = RestRequest::default();
    if body.iter().all(u8::is_ascii_whitespace) {
        r.json_error = Some("empty body".into());
        return r;
    }
    let examples = matches!(method, Some("Classify") | Some("Regress"));
    let b = match rest_body::read_request(body, examples) {
        Ok(b) => b,
        Err(e) => {
            r.json_error = Some(e.to_string());
            return r;
        }
    };
    if !b.object {
        r.notes.push("request body is not a JSON object".into());
        return r;
    }
    let notes = &mut r.notes;
    r.signature = b
        .signature
        .flatten()
        .map(|s| cap_text(s, "request: signature_name", notes));
    if examples {
        r.examples = b.examples.flatten();
        return r;
    }
    match (b.instances, b.inputs) {
        (Some(_), Some(_)) => {
            r.format = Some("both");
            r.notes
                .push("body has both 'instances' and 'inputs'".into());
        }
        (Some(Some(rows)), None) => {
            r.format = Some("row");
            // One tensor per key of the row objects, or a single unnamed
            // input whose alias comes from the signature.
            r.inputs = summaries(rows, &mut r.notes, "request");
        }
        (Some(None), None) => {
            r.format = Some("row");
            r.notes.push("'instances' is not a list".into());
        }
        (None, Some(inputs)) => {
            r.format = Some("columnar");
            r.inputs = summaries(inputs, &mut r.notes, "request");
        }
        (None, None) => r
            .notes
            .push("body has neither 'instances' nor 'inputs'".into()),
    }
    r
}

fn summaries(
    tensors: rest_body::Tensors,
    notes: &mut Vec<String>,
    what: &str,
) -> Vec<TensorSummary> {
    if tensors.too_many {
        notes.push(format!(
            "{what} names more than {} tensors; none is summarised",
            rest_body::MAX_NAMED
        ));
    }
    let named = tensors.named.iter();
    named.map(|(name, n)| tensor(name, n)).collect()
}

/// Named outputs per row, or one unnamed output (alias from the
/// signature), or the columnar outputs.
fn predict_outputs(
    predictions: Option<Option<rest_body::Tensors>>,
    outputs: Option<rest_body::Tensors>,
    notes: &mut Vec<String>,
) -> Vec<TensorSummary> {
    match (predictions, outputs) {
        (Some(Some(rows)), _) => summaries(rows, notes, "response"),
        (_, Some(columnar)) => summaries(columnar, notes, "response"),
        _ => Vec::new(),
    }
}

/// Longest REST text kept ("error", "signature_name"), as HPACK keeps a
/// gRPC `grpc-message` or path: the text is repeated in the line (status,
/// diagnosis evidence), and a body may be 64 MiB of it.
const MAX_TEXT: usize = 64 << 10;

/// `text`, cut to `MAX_TEXT` bytes at a character boundary, with a note
/// naming `what` when it is cut.
fn cap_text(mut text: String, what: &str, notes: &mut Vec<String>) -> String {
    if text.len() > MAX_TEXT {
        notes.push(format!(
            "{what} of {} bytes cut to its first {MAX_TEXT}",
            text.len()
        ));
        let mut cut = MAX_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Model metadata and status responses are read into a `Value` (a few KB
/// for real models); past this a body is not decoded, as a `Value` can take
/// 100 times the bytes it is read from.
const MAX_METADATA_BODY: usize = 4 << 20;

/// Versions of a GetModelStatus response.
fn model_status_of(v: &Value) -> Option<Vec<VersionStatus>> {
    let a = v.get("model_version_status").and_then(Value::as_array)?;
    let status = a.iter().map(|s| VersionStatus {
        version: s
            .get("version")
            .and_then(|x| x.as_i64().or_else(|| x.as_str()?.parse().ok()))
            .unwrap_or(0),
        state: s
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        error_code: None,
        error_message: s
            .pointer("/status/error_message")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string),
    });
    Some(status.collect())
}

impl Exchange {
    /// Builds the exchange of an HTTP/1 request and its response.
    pub fn from_rest(
        id: u64,
        conn: &ConnInfo,
        request: Option<&Message>,
        response: Option<&Message>,
    ) -> Exchange {
        let mut notes = Vec::new();
        let (http_method, target) = match request.map(|r| &r.start) {
            Some(StartLine::Request { method, target, .. }) => {
                (Some(method.as_str()), Some(target.as_str()))
            }
            _ => (None, None),
        };
        let route = match (http_method, target) {
            (Some(m), Some(t)) => route(m, t),
            _ => Route::default(),
        };
        if let Some(p) = &route.problem {
            notes.push(format!("not an API call: {p}"));
        }
        if let Some(p) = &route.version_problem {
            notes.push(p.clone());
        }
        if request.is_none() {
            notes.push("request not captured".into());
        }
        if let Some(req) = request {
            notes.extend(req.problems.iter().map(|p| format!("request: {p}")));
            if let Some(ct) = req.header("content-type") {
                let ct_l = ct.to_ascii_lowercase();
                if ct_l.starts_with("application/grpc") {
                    notes.push(format!("request content-type is {ct} over HTTP/1.1"));
                }
            }
        }
        let mut signatures = None;
        let mut model_status = None;
        let mut body_req = RestRequest::default();
        if let (Some(req), Some(m)) = (request, route.method) {
            if http_method == Some("POST") {
                if req.body_complete {
                    body_req = parse_request_body(Some(m), &req.body);
                    if let Some(e) = &body_req.json_error {
                        notes.push(format!("request body is not valid JSON: {e}"));
                    }
                    notes.append(&mut body_req.notes);
                } else {
                    notes.push("request body incomplete; not decoded".into());
                }
            }
        }
        let mut status = Status {
            ok: false,
            grpc_code: None,
            grpc_status: None,
            http_status: response.and_then(Message::status),
            message: None,
            reset: None,
        };
        let mut outputs = Vec::new();
        let mut results = None;
        let mut resolved_version = None;
        match response {
            Some(resp) => {
                notes.extend(resp.problems.iter().map(|p| format!("response: {p}")));
                let reply = match route.method {
                    Some("Predict") => Reply::Predict,
                    Some("Classify") | Some("Regress") => Reply::Results,
                    _ => Reply::Other,
                };
                let body = rest_body::read_response(&resp.body, reply).ok();
                if let Some(b) = body {
                    status.message = b
                        .error
                        .map(|e| cap_text(e, "response: error message", &mut notes));
                    match route.method {
                        Some("Predict") => {
                            outputs = predict_outputs(b.predictions, b.outputs, &mut notes)
                        }
                        Some("Classify") | Some("Regress") => {
                            results = b.results.unwrap_or(b.result.flatten())
                        }
                        Some("GetModelMetadata" | "GetModelStatus") if status.message.is_none() => {
                            if resp.body.len() > MAX_METADATA_BODY {
                                notes.push(format!(
                                    "response body of {} bytes not decoded (model metadata and status are read up to {} bytes)",
                                    resp.body.len(),
                                    MAX_METADATA_BODY
                                ));
                            } else if let Ok(v) = serde_json::from_slice::<Value>(&resp.body) {
                                if route.method == Some("GetModelMetadata") {
                                    if let Ok((_, version, map)) =
                                        crate::diagnose::sources::parse_metadata_json(&v)
                                    {
                                        resolved_version = version;
                                        signatures = Some(map);
                                    }
                                } else {
                                    model_status = model_status_of(&v);
                                }
                            }
                        }
                        _ => {}
                    }
                } else if !resp.body.is_empty() {
                    let ct = resp.header("content-type").unwrap_or("");
                    notes.push(format!(
                        "response body is not JSON ({}{} bytes)",
                        if ct.is_empty() {
                            String::new()
                        } else {
                            format!("{ct}, ")
                        },
                        resp.body.len()
                    ));
                }
                status.ok = status.http_status.is_some_and(|s| (200..400).contains(&s))
                    && status.message.is_none();
            }
            None => {
                status.reset = Some("no response seen".into());
                notes.push("no response seen".into());
            }
        }
        let start_ts = request.map(|r| r.first_ts_ns).filter(|t| *t != 0);
        let end_ts = response.map(|r| r.last_ts_ns);
        let latency_ms = match (start_ts, end_ts) {
            (Some(s), Some(e)) if e >= s => Some((e - s) as f64 / 1e6),
            _ => None,
        };
        let complete =
            request.is_some_and(|r| r.body_complete) && response.is_some_and(|r| r.body_complete);
        // The signature is known only if the body was read as JSON.
        let body_read = body_req.json_error.is_none() && request.is_some_and(|r| r.body_complete);
        let signature = match route.method {
            Some("Predict") | Some("Classify") | Some("Regress") if body_read => Some(
                body_req
                    .signature
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SIGNATURE.to_string()),
            ),
            _ => None,
        };
        let request_id = request
            .and_then(|r| r.header("x-request-id"))
            .map(str::to_string);
        let first_frame = request.and_then(|r| r.frames.first()).copied();
        let wireshark_filter = match first_frame {
            Some(f) => format!("tcp.stream eq {} && frame.number >= {f}", conn.id),
            None => format!("tcp.stream eq {}", conn.id),
        };
        Exchange {
            kind: "exchange",
            id,
            transport: Transport::Rest,
            client: conn.client_text.clone(),
            server: conn.server_text.clone(),
            connection: conn.id,
            stream: None,
            request_frames: request.map(|r| r.frames.clone()).unwrap_or_default(),
            response_frames: response.map(|r| r.frames.clone()).unwrap_or_default(),
            request_id,
            method: route.method.map(std::borrow::Cow::Borrowed),
            path: target.map(|t| t.to_string()),
            model: route.model,
            version: route.version.or(resolved_version),
            version_label: route.version_label,
            signature,
            inputs: body_req.inputs,
            outputs,
            output_filter: Vec::new(),
            examples: body_req.examples,
            tasks: Vec::new(),
            results,
            signatures,
            model_status,
            request_encoding: request
                .and_then(|r| r.header("content-encoding"))
                .map(str::to_string),
            request_bytes: request.map(|r| r.body_wire_len).unwrap_or(0),
            response_bytes: response.map(|r| r.body_wire_len).unwrap_or(0),
            start: start_ts.map(rfc3339),
            latency_ms,
            status,
            complete,
            notes,
            diagnosis: None,
            warnings: Vec::new(),
            wireshark_filter,
            start_ts_ns: start_ts,
            resolved_version,
            metadata_fields: Vec::new(),
            rest_format: body_req.format,
            http_method: http_method.map(str::to_string),
            protocol_problem: None,
            protocol_problem_certain: false,
        }
    }
}

/// Resolves REST tensor names and dtypes against the signature: a single
/// unnamed input or output takes the signature's alias, and every tensor
/// whose alias the signature lists gets its dtype (the server converts the
/// JSON to it, or fails trying; DESIGN.md §3).
pub fn apply_signature(ex: &mut Exchange, sig: &signature::Signature) {
    resolve(&mut ex.inputs, &sig.inputs);
    resolve(&mut ex.outputs, &sig.outputs);
}

fn resolve(tensors: &mut [TensorSummary], specs: &[super::TensorSpec]) {
    let by_alias = names::ByName::new(specs, |s| s.alias.as_str());
    for t in tensors.iter_mut() {
        if (t.name.is_empty() || t.name == "predictions" || t.name == "outputs") && specs.len() == 1
        {
            t.name = specs[0].alias.clone();
        }
        if let Some(spec) = by_alias.get(&t.name) {
            t.dtype = spec
                .dtype
                .as_deref()
                .and_then(super::dtype::code)
                .and_then(super::dtype::name);
        }
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Value-based reading this module did before `rest_body`: the
    // reference the streaming reader is checked against.

    /// The JSON type names TF Serving uses in messages.
    fn json_kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_f64() => "float",
            Value::Number(_) => "int",
            Value::String(_) => "string",
            Value::Array(_) => "list",
            Value::Object(o) if is_b64(o) => "b64",
            Value::Object(_) => "object",
        }
    }

    fn is_b64(o: &serde_json::Map<String, Value>) -> bool {
        o.len() == 1 && o.get("b64").is_some_and(Value::is_string)
    }

    fn nest(v: &Value) -> Nest {
        let mut n = Nest {
            shape: Vec::new(),
            values: 0,
            kinds: Vec::new(),
            ragged: false,
        };
        let mut cur = v;
        while let Value::Array(a) = cur {
            n.shape.push(a.len() as i64);
            match a.first() {
                Some(first) => cur = first,
                None => break,
            }
        }
        walk(v, 0, &n.shape.clone(), &mut n);
        n
    }

    fn walk(v: &Value, depth: usize, shape: &[i64], n: &mut Nest) {
        match v {
            Value::Array(a) => {
                if shape.get(depth) != Some(&(a.len() as i64)) {
                    n.ragged = true;
                }
                for x in a {
                    walk(x, depth + 1, shape, n);
                }
            }
            scalar => {
                if depth != shape.len() {
                    n.ragged = true;
                }
                n.values += 1;
                let k = json_kind(scalar);
                if !n.kinds.contains(&k) {
                    n.kinds.push(k);
                }
            }
        }
    }

    fn parse_request_body_value(method: Option<&str>, body: &[u8]) -> RestRequest {
        let mut r = RestRequest::default();
        if body.iter().all(u8::is_ascii_whitespace) {
            r.json_error = Some("empty body".into());
            return r;
        }
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                r.json_error = Some(e.to_string());
                return r;
            }
        };
        let Some(obj) = v.as_object() else {
            r.notes.push("request body is not a JSON object".into());
            return r;
        };
        r.signature = obj
            .get("signature_name")
            .and_then(Value::as_str)
            .map(str::to_string);
        if matches!(method, Some("Classify") | Some("Regress")) {
            r.examples = obj
                .get("examples")
                .and_then(Value::as_array)
                .map(|a| a.len() as u64);
            return r;
        }
        match (obj.get("instances"), obj.get("inputs")) {
            (Some(_), Some(_)) => {
                r.format = Some("both");
                r.notes
                    .push("body has both 'instances' and 'inputs'".into());
            }
            (Some(list @ Value::Array(rows)), None) => {
                r.format = Some("row");
                // One tensor per key of the row objects, or a single unnamed
                // input whose alias comes from the signature.
                r.inputs = named_rows(rows).unwrap_or_else(|| vec![tensor("", &nest(list))]);
            }
            (Some(_), None) => {
                r.format = Some("row");
                r.notes.push("'instances' is not a list".into());
            }
            (None, Some(Value::Object(o))) if !is_b64(o) => {
                r.format = Some("columnar");
                let mut names: Vec<&String> = o.keys().collect();
                names.sort();
                for name in names {
                    r.inputs.push(tensor(name, &nest(&o[name])));
                }
            }
            (None, Some(v)) => {
                r.format = Some("columnar");
                r.inputs.push(tensor("", &nest(v)));
            }
            (None, None) => r
                .notes
                .push("body has neither 'instances' nor 'inputs'".into()),
        }
        r
    }

    fn outputs_of(v: &Value) -> Vec<TensorSummary> {
        let mut out = Vec::new();
        if let Some(list @ Value::Array(p)) = v.get("predictions") {
            // Named outputs per row, or one unnamed output (alias from the signature).
            out = named_rows(p).unwrap_or_else(|| vec![tensor("", &nest(list))]);
        } else if let Some(o) = v.get("outputs") {
            match o {
                Value::Object(m) if !is_b64(m) => {
                    let mut names: Vec<&String> = m.keys().collect();
                    names.sort();
                    for name in names {
                        out.push(tensor(name, &nest(&m[name])));
                    }
                }
                other => out.push(tensor("", &nest(other))),
            }
        }
        out
    }

    /// Row format with objects (one key per input or output): one tensor per
    /// key, `[rows, …]`, ragged when a row lacks the key or differs in shape.
    /// None when the rows are not objects. Defined per key, a lookup in every
    /// row (rows × keys, fine for a reference).
    fn named_rows(rows: &[Value]) -> Option<Vec<TensorSummary>> {
        let named = rows
            .first()
            .is_some_and(|f| f.as_object().is_some_and(|o| !is_b64(o)));
        if !named {
            return None;
        }
        let mut names: Vec<&String> = rows
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|o| o.keys())
            .collect();
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            let per_row: Vec<Nest> = rows
                .iter()
                .filter_map(|row| row.get(name.as_str()).map(nest))
                .collect();
            let first = &per_row[0];
            let mut shape = vec![rows.len() as i64];
            shape.extend_from_slice(&first.shape);
            let mut kinds: Vec<&'static str> = Vec::new();
            for n in &per_row {
                for k in &n.kinds {
                    if !kinds.contains(k) {
                        kinds.push(k);
                    }
                }
            }
            let ragged = per_row.len() != rows.len()
                || per_row.iter().any(|n| n.ragged || n.shape != first.shape);
            let values = per_row.iter().map(|n| n.values).sum();
            out.push(tensor(
                name,
                &Nest {
                    shape,
                    values,
                    kinds,
                    ragged,
                },
            ));
        }
        Some(out)
    }

    /// Keys of the random bodies; from index 6 on, the members TF Serving reads.
    const KEYS: [&str; 16] = [
        "a",
        "b",
        "b64",
        "",
        "b\\u00364",
        "x\\n",
        "instances",
        "inputs",
        "signature_name",
        "examples",
        "predictions",
        "outputs",
        "results",
        "result",
        "error",
        "k",
    ];

    /// Random JSON of the shapes REST bodies take (nested lists, rows of
    /// objects, b64 wrappers, duplicate and escaped keys), sometimes broken.
    fn random_json(rng: &mut impl FnMut(u64) -> u64, depth: u32, out: &mut String) {
        let pick = if depth == 0 { rng(6) } else { rng(16) };
        match pick {
            0 | 6 | 7 | 8 => {
                // Lists, often of equal-length lists.
                let n = rng(4);
                let inner = rng(3);
                out.push('[');
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    if inner == 0 && depth > 0 {
                        out.push('[');
                        for j in 0..2 + rng(2) / 2 {
                            if j > 0 {
                                out.push(',');
                            }
                            random_json(rng, depth - 1, out);
                        }
                        out.push(']');
                    } else {
                        random_json(rng, depth.saturating_sub(1), out);
                    }
                }
                out.push(']');
            }
            1 | 9 | 10 => {
                let n = rng(4);
                out.push('{');
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    out.push_str(KEYS[rng(KEYS.len() as u64) as usize]);
                    out.push_str("\":");
                    random_json(rng, depth.saturating_sub(1), out);
                }
                out.push('}');
            }
            2 => out.push_str(
                [
                    "1",
                    "-7",
                    "0",
                    "18446744073709551615",
                    "-9223372036854775808",
                    "123456789012345678901234567890",
                ][rng(6) as usize],
            ),
            3 => out.push_str(["1.5", "-0.0", "1e3", "2E-2", "1e308"][rng(5) as usize]),
            4 => out.push_str(
                ["\"s\"", "\"aGk=\"", "\"\\u00e9\"", "\"\"", "\"\\\"\""][rng(5) as usize],
            ),
            _ => out.push_str(["null", "true", "false"][rng(3) as usize]),
        }
    }

    fn random_bodies(seed: u64, count: usize) -> Vec<Vec<u8>> {
        let mut rng = crate::test_rng(seed);
        let mut bodies = Vec::new();
        for _ in 0..count {
            let mut s = String::new();
            let depth = 1 + rng(5) as u32;
            random_json(&mut rng, depth, &mut s);
            // Mostly an object of the members TF Serving reads.
            if rng(4) != 0 {
                let mut o = String::from("{");
                for i in 0..1 + rng(3) {
                    if i > 0 {
                        o.push(',');
                    }
                    let key = KEYS[6 + rng(9) as usize];
                    o.push_str(&format!("\"{key}\":"));
                    if i == 0 {
                        o.push_str(&s);
                    } else {
                        let depth = 1 + rng(4) as u32;
                        random_json(&mut rng, depth, &mut o);
                    }
                }
                o.push('}');
                s = o;
            }
            let mut b = s.into_bytes();
            match rng(12) {
                0 if !b.is_empty() => b.truncate(rng(b.len() as u64) as usize),
                1 if !b.is_empty() => {
                    let i = rng(b.len() as u64) as usize;
                    b[i] = [b'x', b'"', b',', b']', b'}', 0xff, 0x01, b' '][rng(8) as usize];
                }
                2 => b.extend_from_slice(b" x"),
                3 => b.extend_from_slice(b" \n"),
                _ => {}
            }
            bodies.push(b);
        }
        // A member given twice counts as its last value.
        for b in [
            r#"{"instances": [{"b64": 1, "b64": "x"}, {"a": 1}]}"#,
            r#"{"instances": [{"b64": "x", "b64": 1}, {"a": 1}]}"#,
            r#"{"inputs": {"b64": 1, "b64": "aGk="}}"#,
            r#"{"inputs": [{"b64": "x", "b64": []}, {"b64": "x"}]}"#,
            r#"{"signature_name": "s", "signature_name": 1, "instances": [1], "instances": 2}"#,
            r#"{"instances": [{"a": [1, 2], "a": 3}, {"a": 4}], "predictions": {}, "predictions": [[1]]}"#,
        ] {
            bodies.push(b.as_bytes().to_vec());
        }
        // Nested past serde_json's recursion limit.
        bodies.push(
            format!("{{\"instances\": {}1{}}}", "[".repeat(200), "]".repeat(200)).into_bytes(),
        );
        bodies
            .push(format!("{{\"inputs\": {}1{}}}", "[".repeat(100), "]".repeat(100)).into_bytes());
        bodies
    }

    #[test]
    fn streaming_request_reading_agrees_with_value() {
        for (i, body) in random_bodies(0x5eed_0001, 20_000).iter().enumerate() {
            for method in [Some("Predict"), Some("Classify"), None] {
                assert_eq!(
                    format!("{:?}", parse_request_body(method, body)),
                    format!("{:?}", parse_request_body_value(method, body)),
                    "body {i}: {}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn streaming_response_reading_agrees_with_value() {
        for (i, body) in random_bodies(0x5eed_0002, 20_000).iter().enumerate() {
            for reply in [Reply::Predict, Reply::Results, Reply::Other] {
                let new = rest_body::read_response(body, reply).ok().map(|b| {
                    let outputs = match reply {
                        Reply::Predict => {
                            predict_outputs(b.predictions, b.outputs, &mut Vec::new())
                        }
                        _ => Vec::new(),
                    };
                    let results = match reply {
                        Reply::Results => b.results.unwrap_or(b.result.flatten()),
                        _ => None,
                    };
                    (b.error, format!("{outputs:?}"), results)
                });
                let old = serde_json::from_slice::<Value>(body).ok().map(|v| {
                    let error = v.get("error").and_then(Value::as_str).map(str::to_string);
                    let outputs = match reply {
                        Reply::Predict => outputs_of(&v),
                        _ => Vec::new(),
                    };
                    let results = match reply {
                        Reply::Results => v
                            .get("results")
                            .or_else(|| v.get("result"))
                            .and_then(Value::as_array)
                            .map(|a| a.len() as u64),
                        _ => None,
                    };
                    (error, format!("{outputs:?}"), results)
                });
                assert_eq!(
                    new,
                    old,
                    "body {i} {reply:?}: {}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn json_errors_are_serde_json_errors() {
        for body in [
            &b"{\"instances\": [1, 2"[..],
            b"{\"a\": 1,}",
            b"[\"\xff\"]",
            b"{} x",
            b"{\"inputs\": 1e999}",
        ] {
            let expected = serde_json::from_slice::<Value>(body)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert!(expected.is_err());
            assert_eq!(
                parse_request_body(Some("Predict"), body).json_error,
                expected.err()
            );
        }
    }

    #[test]
    fn row_reading_agrees_with_a_lookup_per_key() {
        let mut bodies: Vec<String> = [
            "[]",
            "[1, 2]",
            r#"[{"b64": "AAAA"}, {"a": 1}]"#,
            r#"[{"a": 1, "b": [1, 2]}, {"b": [3, 4], "a": 2}]"#,
            r#"[{"a": 1}, {"b": "x"}, {"a": [1]}, 7, {"": null}]"#,
            r#"[{"a": 1, "a": 2}, {"": [[1], [2, 3]]}, {"": true, "a": "s"}]"#,
            r#"[{"x": [1.5, "s"]}, {"x": [null, true]}, {"x": [[1]]}]"#,
        ]
        .map(str::to_string)
        .to_vec();
        // Many keys: distinct per row, shared in twos, with empty names.
        for n in [16, 17, 40, 3000] {
            let rows: Vec<String> = (0..n)
                .map(|i| match i % 4 {
                    0 => format!(r#"{{"k{i}": [{i}]}}"#),
                    1 => format!(r#"{{"k{}": "v", "": [1, 2]}}"#, i / 2),
                    2 => format!(r#"{{"k{}": [[1], [2]], "z": {i}}}"#, i / 3),
                    _ => "[0]".to_string(),
                })
                .collect();
            bodies.push(format!("[{}]", rows.join(",")));
        }
        for rows in &bodies {
            let body = format!(r#"{{"instances": {rows}}}"#);
            let (streamed, reference) = (
                parse_request_body(Some("Predict"), body.as_bytes()),
                parse_request_body_value(Some("Predict"), body.as_bytes()),
            );
            assert!(!streamed.inputs.is_empty());
            assert_eq!(
                format!("{streamed:?}"),
                format!("{reference:?}"),
                "{}",
                &body[..body.len().min(200)]
            );
        }
    }

    #[test]
    fn resolve_matches_50k_columnar_inputs_by_alias() {
        // More than a body is summarised with (MAX_NAMED): signatures are
        // not capped.
        let nest = Nest {
            shape: vec![1],
            values: 1,
            kinds: vec!["int"],
            ragged: false,
        };
        let mut inputs_sent: Vec<TensorSummary> = (0..50_000)
            .map(|i| tensor(&format!("k{i:06}"), &nest))
            .collect();
        // Specs: every other alias, plus a duplicate alias whose first entry wins.
        let mut inputs: Vec<super::super::TensorSpec> = (0..50_000)
            .step_by(2)
            .map(|i| super::super::TensorSpec {
                alias: format!("k{i:06}"),
                dtype: Some(if i == 4 { "DT_INT32" } else { "DT_FLOAT" }.into()),
                shape: None,
                tensor_name: None,
            })
            .collect();
        let mut dup = inputs[2].clone();
        dup.dtype = Some("DT_STRING".into());
        inputs.push(dup);
        let start = std::time::Instant::now();
        resolve(&mut inputs_sent, &inputs);
        assert!(start.elapsed().as_secs() < 30, "{:?}", start.elapsed());
        assert_eq!(inputs_sent.len(), 50_000);
        assert_eq!(inputs_sent[0].dtype, Some("DT_FLOAT"));
        assert_eq!(inputs_sent[1].dtype, None);
        assert_eq!(inputs_sent[4].dtype, Some("DT_INT32"));
        assert_eq!(inputs_sent[49_998].dtype, Some("DT_FLOAT"));
    }

    #[test]
    fn a_key_per_row_for_50k_rows_is_one_pass() {
        // Each row its own key: rows × keys lookups took minutes here.
        let n = rest_body::MAX_NAMED;
        let rows: Vec<String> = (0..n).map(|i| format!(r#"{{"k{i}": 0}}"#)).collect();
        let body = format!(r#"{{"instances": [{}]}}"#, rows.join(","));
        let start = std::time::Instant::now();
        let r = parse_request_body(Some("Predict"), body.as_bytes());
        assert_eq!(r.inputs.len(), n);
        assert!(r.inputs.iter().all(|t| t.shape == Some(vec![n as i64])));
        assert!(r.inputs.iter().all(|t| !t.problems.is_empty()), "ragged");
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        // Past MAX_NAMED names, none is kept.
        let rows: Vec<String> = (0..50_000).map(|i| format!(r#"{{"k{i}": 0}}"#)).collect();
        let body = format!(r#"{{"instances": [{}]}}"#, rows.join(","));
        let r = parse_request_body(Some("Predict"), body.as_bytes());
        assert_eq!(r.format, Some("row"));
        assert!(r.inputs.is_empty());
        assert_eq!(
            r.notes,
            ["request names more than 10000 tensors; none is summarised"]
        );
        assert!(start.elapsed().as_secs() < 30, "{:?}", start.elapsed());
    }

    #[test]
    fn too_many_names_in_one_object() {
        let n = rest_body::MAX_NAMED;
        let keys = |n: usize| -> String {
            let k: Vec<String> = (0..n).map(|i| format!(r#""k{i}": [1, 2]"#)).collect();
            k.join(",")
        };
        for (count, kept) in [(n, n), (n + 1, 0)] {
            for body in [
                format!(r#"{{"inputs": {{{}}}}}"#, keys(count)),
                format!(
                    r#"{{"instances": [{{{}}}, {{"k0": [3, 4]}}]}}"#,
                    keys(count)
                ),
            ] {
                let r = parse_request_body(Some("Predict"), body.as_bytes());
                assert_eq!(r.inputs.len(), kept, "{count}");
                assert_eq!(r.notes.len(), usize::from(kept == 0), "{:?}", r.notes);
            }
        }
        // A name repeated past the count is still one name.
        let body = format!(
            r#"{{"inputs": {{{}"a": [1, 2]}}}}"#,
            r#""a": 1,"#.repeat(3 * n + 7)
        );
        let r = parse_request_body(Some("Predict"), body.as_bytes());
        assert_eq!(r.inputs.len(), 1);
        assert_eq!(r.inputs[0].shape, Some(vec![2]));
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        let body = format!(
            r#"{{"instances": [{{"a": 1}}, {{{}"b": 2}}]}}"#,
            r#""b": 1,"#.repeat(n + 1)
        );
        let r = parse_request_body(Some("Predict"), body.as_bytes());
        assert_eq!(r.inputs.len(), 2);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        // Repeats of "b64" past the count are still one b64 value.
        let body = format!(
            r#"{{"inputs": {{{}"b64": "aGk="}}}}"#,
            r#""b64": 1,"#.repeat(n + 5)
        );
        let r = parse_request_body(Some("Predict"), body.as_bytes());
        assert_eq!(r.inputs.len(), 1);
        assert_eq!(r.inputs[0].json, Some(vec!["b64"]));
        assert!(r.notes.is_empty());
        // And in a response.
        let body = format!(r#"{{"outputs": {{{}}}}}"#, keys(n + 1));
        let b = rest_body::read_response(body.as_bytes(), Reply::Predict).expect("json");
        let mut notes = Vec::new();
        assert!(predict_outputs(b.predictions, b.outputs, &mut notes).is_empty());
        assert_eq!(
            notes,
            ["response names more than 10000 tensors; none is summarised"]
        );
    }

    #[test]
    fn outputs_in_row_and_columnar_form() {
        let outputs = |body: &str| {
            let b = rest_body::read_response(body.as_bytes(), Reply::Predict).expect("json");
            predict_outputs(b.predictions, b.outputs, &mut Vec::new())
        };
        let out =
            outputs(r#"{"predictions": [{"a": [1.0, 2.0], "b": 3}, {"a": [4.0, 5.0], "b": 6}]}"#);
        assert_eq!(
            out.iter()
                .map(|t| (t.name.as_str(), t.shape.clone()))
                .collect::<Vec<_>>(),
            vec![("a", Some(vec![2, 2])), ("b", Some(vec![2]))]
        );
        let out = outputs(r#"{"predictions": [[0.1], [0.9]]}"#);
        assert_eq!(out[0].shape, Some(vec![2, 1]));
        assert_eq!(out[0].name, "");
        // Not a list: the columnar outputs are read instead.
        let out = outputs(r#"{"predictions": 1, "outputs": {"y": [[1, 2, 3]]}}"#);
        assert_eq!(
            (out[0].name.as_str(), out[0].shape.clone()),
            ("y", Some(vec![1, 3]))
        );
    }

    #[test]
    fn huge_texts_are_cut_at_a_character() {
        let mut notes = Vec::new();
        assert_eq!(cap_text("short".into(), "e", &mut notes), "short");
        assert!(notes.is_empty());
        // 'é' is two bytes: the cut falls inside one and moves back.
        let long = format!("x{}", "é".repeat(MAX_TEXT));
        let cut = cap_text(long.clone(), "response: error message", &mut notes);
        assert_eq!(cut.len(), MAX_TEXT - 1);
        assert!(long.starts_with(&cut));
        assert_eq!(
            notes,
            [format!(
                "response: error message of {} bytes cut to its first 65536",
                long.len()
            )]
        );
        // A signature name, read from a request body.
        let body = format!(
            r#"{{"signature_name": "{}", "instances": [1]}}"#,
            "s".repeat(70_000)
        );
        let r = parse_request_body(Some("Predict"), body.as_bytes());
        assert_eq!(r.signature.map(|s| s.len()), Some(MAX_TEXT));
        assert_eq!(
            r.notes,
            ["request: signature_name of 70000 bytes cut to its first 65536"]
        );
        assert_eq!(r.inputs[0].shape, Some(vec![1]));
    }

    #[test]
    fn routes() {
        let r = route("POST", "/v1/models/fraud/versions/2:predict");
        assert_eq!(
            (r.method, r.model.as_deref(), r.version),
            (Some("Predict"), Some("fraud"), Some(2))
        );
        let r = route("POST", "/v1/models/fraud/labels/stable:classify");
        assert_eq!(
            (r.method, r.version_label.as_deref()),
            (Some("Classify"), Some("stable"))
        );
        let r = route("POST", "/v1/models/fraud");
        assert_eq!(
            r.problem.as_deref(),
            Some("Malformed request: POST /v1/models/fraud")
        );
        let r = route("POST", "/v1/models/fraud:Predict");
        assert!(r.problem.is_some(), "verb is case-sensitive");
        let r = route("POST", "/v1/models/fraud/versions/abc:predict");
        assert!(r.problem.is_some());
        let r = route("GET", "/v1/models/fraud/versions/1/metadata");
        assert_eq!((r.method, r.version), (Some("GetModelMetadata"), Some(1)));
        let r = route("GET", "/v1/models/fraud");
        assert_eq!(r.method, Some("GetModelStatus"));
        let r = route("GET", "/v1/models/my%20model/metadata");
        assert_eq!(r.model.as_deref(), Some("my model"));
        assert!(route("GET", "/healthz")
            .problem
            .is_some_and(|p| p.contains("HTML 404")));
        assert!(route("PUT", "/v1/models/x:predict").problem.is_some());
    }

    #[test]
    fn row_and_columnar_bodies() {
        let r = parse_request_body(
            Some("Predict"),
            br#"{"instances": [[1.0, 2.0], [3.0, 4.0]]}"#,
        );
        assert_eq!(r.format, Some("row"));
        assert_eq!(r.inputs[0].shape, Some(vec![2, 2]));
        assert_eq!(r.inputs[0].values, Some(4));
        assert_eq!(r.inputs[0].json, Some(vec!["float"]));

        let r = parse_request_body(
            Some("Predict"),
            br#"{"signature_name": "s", "instances": [{"ids": [1, 2, 3], "mask": [1, 1, 0]}, {"ids": [4, 5, 6], "mask": [1, 1, 1]}]}"#,
        );
        assert_eq!(r.signature.as_deref(), Some("s"));
        assert_eq!(r.inputs.len(), 2);
        assert_eq!(r.inputs[0].name, "ids");
        assert_eq!(r.inputs[0].shape, Some(vec![2, 3]));
        assert_eq!(r.inputs[0].json, Some(vec!["int"]));

        let r = parse_request_body(
            Some("Predict"),
            br#"{"inputs": {"a": [[1, 2]], "b": {"b64": "aGk="}}}"#,
        );
        assert_eq!(r.format, Some("columnar"));
        assert_eq!(r.inputs[0].shape, Some(vec![1, 2]));
        assert_eq!(r.inputs[1].shape, Some(vec![]));
        assert_eq!(r.inputs[1].json, Some(vec!["b64"]));

        let r = parse_request_body(Some("Predict"), br#"{"instances": [[1, 2, 3], [4, 5]]}"#);
        assert!(!r.inputs[0].problems.is_empty(), "ragged");

        let r = parse_request_body(Some("Predict"), br#"{"instances": [1, 2,]}"#);
        assert!(r.json_error.is_some());
    }
}
