//! `Exchange`: one request paired with its response, in the JSON Lines
//! output contract (DESIGN.md §3, schema version 1). Extend, never rename.

use std::borrow::Cow;

use serde::Serialize;

use super::{decode_request_kept, decode_response_kept, Decoded, Method, TensorSummary};
use crate::diagnose::Diagnosis;
use crate::grpc::{code_name, Call, Ending};
use crate::http2::frame::error_name;
use crate::net::{ConnInfo, Dir};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Grpc,
    Rest,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VersionStatus {
    pub version: i64,
    pub state: String,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Status {
    pub ok: bool,
    pub grpc_code: Option<u32>,
    pub grpc_status: Option<&'static str>,
    pub http_status: Option<u16>,
    pub message: Option<String>,
    /// How the stream ended when not by the server's trailers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: u64,
    pub transport: Transport,
    pub client: String,
    pub server: String,
    /// Wireshark `tcp.stream` index.
    pub connection: u64,
    pub stream: Option<u32>,
    pub request_frames: Vec<u64>,
    pub response_frames: Vec<u64>,
    pub request_id: Option<String>,
    /// A TF Serving method's name is static; another RPC's is owned.
    pub method: Option<Cow<'static, str>>,
    pub path: Option<String>,
    pub model: Option<String>,
    pub version: Option<i64>,
    pub version_label: Option<String>,
    pub signature: Option<String>,
    pub inputs: Vec<TensorSummary>,
    pub outputs: Vec<TensorSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output_filter: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub examples: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures: Option<super::SignatureMap>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_status: Option<Vec<VersionStatus>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_encoding: Option<String>,
    /// REST: `row` ("instances"), `columnar` ("inputs") or `both`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest_format: Option<&'static str>,
    /// REST: the HTTP request method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_method: Option<String>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub start: Option<String>,
    pub latency_ms: Option<f64>,
    pub status: Status,
    pub complete: bool,
    pub notes: Vec<String>,
    /// Boxed: only failures have one, and inline it took the exchange past
    /// mimalloc's small-object size (1 KiB), whose aligned path costs about
    /// seven times the instructions.
    pub diagnosis: Option<Box<Diagnosis>>,
    pub warnings: Vec<String>,
    /// Opens this exchange in Wireshark.
    pub wireshark_filter: String,
    #[serde(skip)]
    pub start_ts_ns: Option<i64>,
    #[serde(skip)]
    pub resolved_version: Option<i64>,
    #[serde(skip)]
    pub metadata_fields: Vec<String>,
    /// The two sides speak different protocols (set by the pipeline).
    #[serde(skip)]
    pub protocol_problem: Option<String>,
    #[serde(skip)]
    pub protocol_problem_certain: bool,
}

impl Exchange {
    /// Builds the exchange of a finished gRPC call.
    pub fn from_grpc(id: u64, conn: &ConnInfo, mut call: Box<Call>) -> Box<Exchange> {
        let mut notes = Vec::new();
        let path = call.request_header(":path").map(str::to_string);
        let mut method = path.as_deref().and_then(Method::from_path);
        // Without :path (capture started mid-connection), the messages
        // themselves tell the method apart; the guess is named as such.
        if path.is_none() {
            let first = |d: &crate::grpc::Deframer| {
                d.messages
                    .first()
                    .filter(|m| m.complete)
                    .map(|m| m.data.clone())
            };
            let req = first(&call.request);
            let resp = first(&call.response);
            let message = call.status().message;
            if let Some((m, why)) =
                super::infer_method(req.as_deref(), resp.as_deref(), message.as_deref())
            {
                if why == super::AMBIGUOUS_STATUS_OR_METADATA {
                    notes.push(format!("method unknown: {why}"));
                } else {
                    notes.push(format!(
                        "method {} inferred from the request message ({why})",
                        m.name()
                    ));
                }
                method = Some(m);
            } else if let Some(msg) = call
                .request
                .messages
                .first()
                .filter(|m| !m.complete && !m.data.is_empty())
            {
                // Only the start of the request was sent or seen: a Predict
                // shows its model_spec and tensor headers first.
                let mut probe = Decoded::default();
                super::decode_request_prefix(Method::Predict, &msg.data, &mut probe);
                if probe.model.is_some()
                    && probe
                        .inputs
                        .iter()
                        .any(|t| t.dtype.is_some_and(|d| d != "DT_INVALID"))
                {
                    notes.push("method Predict inferred from the first bytes of the request message (a map of TensorProtos)".into());
                    method = Some(Method::Predict);
                }
            }
        }
        let ambiguous = notes
            .iter()
            .any(|n| n.contains(super::AMBIGUOUS_STATUS_OR_METADATA));
        let method_name = match (&path, method) {
            // Decoded as GetModelStatus (same layout), but not named.
            (_, Some(_)) if ambiguous => None,
            (_, Some(m)) => Some(Cow::Borrowed(m.name())),
            // Not a TF Serving service: name the RPC as the path has it.
            (Some(p), None) => {
                notes.push(format!(
                    "{p} is not a TF Serving method; messages not decoded"
                ));
                p.rsplit('/').next().map(|m| Cow::Owned(m.to_string()))
            }
            (None, None) => None,
        };
        if call.started_unframed[0] {
            notes.push(
                "the request began before the capture (or a loss): its message was not decoded"
                    .to_string(),
            );
        }
        if call.started_unframed[1] {
            notes.push(
                "the response began before the capture (or a loss): its message was not decoded"
                    .to_string(),
            );
        }
        match &call.request_headers {
            None => notes.push("request headers not captured".to_string()),
            Some(h) if h.error.is_some() => notes.push(format!(
                "request headers undecodable: {}",
                h.error.as_deref().unwrap_or("")
            )),
            Some(h) if path.is_none() && h.maybe_unknown(":path") => notes.push(
                "request :path refers to HPACK state from before the capture started".to_string(),
            ),
            Some(_) => {}
        }
        if let Some(ct) = call.request_header("content-type") {
            if !ct.starts_with("application/grpc") {
                notes.push(format!(
                    "request content-type is {ct}, not application/grpc"
                ));
            }
        }

        let mut d = Decoded::default();
        // Complete: everything the two sides exchanged was captured (a reset
        // or a message the client never finished sending is still complete).
        let mut complete = matches!(call.ending, Ending::Completed | Ending::Reset { .. })
            && call.request_headers.is_some();
        if let Some(m) = method {
            match call.request.messages.first() {
                Some(msg) if msg.complete => decode_request_kept(m, &msg.data, &msg.elided, &mut d),
                Some(msg) => {
                    notes.push(format!(
                        "request message incomplete: {}",
                        msg.problem.as_deref().unwrap_or("not all bytes captured")
                    ));
                    if !msg.data.is_empty() {
                        notes.push(format!(
                            "request decoded from its first {} of {} bytes",
                            msg.seen_len(),
                            msg.wire_len
                        ));
                        super::decode_request_prefix_kept(m, &msg.data, &msg.elided, &mut d);
                    }
                }
                None if call.request_ended || call.request_headers.is_some() => {
                    notes.push("no request message seen".to_string());
                    complete = false;
                }
                None => complete = false,
            }
            match call.response.messages.first() {
                Some(msg) if msg.complete => {
                    decode_response_kept(m, &msg.data, &msg.elided, &mut d)
                }
                Some(msg) => {
                    notes.push(format!(
                        "response message incomplete: {}",
                        msg.problem.as_deref().unwrap_or("not all bytes captured")
                    ));
                }
                None => {}
            }
            if call.request.messages.len() > 1 {
                notes.push(format!(
                    "{} request messages on a unary method; only the first is decoded",
                    call.request.messages.len()
                ));
            }
        }
        notes.append(&mut d.notes);
        for m in call.request.messages.iter().chain(&call.response.messages) {
            if let Some(n) = &m.note {
                notes.push(n.clone());
            }
        }
        for (i, dir) in ["request", "response"].iter().enumerate() {
            if call.lost_bytes[i] > 0 {
                complete = false;
                notes.push(format!("{} {dir} bytes not captured", call.lost_bytes[i]));
            }
            if call.desynced[i] {
                complete = false;
                notes.push(format!(
                    "HTTP/2 framing lost in the {dir} direction (capture gap)"
                ));
            }
        }
        if call.refused_by_goaway {
            notes.push("server's GOAWAY says this stream was never processed".to_string());
        }

        let grpc = call.status();
        if grpc.message_inferred {
            notes.push("grpc-message inferred: the value of a header whose name is an HPACK entry from before the capture".to_string());
        }
        let http_status = call.http_status();
        let mut status = Status {
            ok: false,
            grpc_code: grpc.code,
            grpc_status: grpc.code.and_then(code_name),
            http_status,
            // grpc servers send an empty grpc-message with OK.
            message: grpc.message.clone().filter(|m| !m.is_empty()),
            reset: None,
        };
        match call.ending {
            Ending::Completed => {
                if grpc.code.is_none() {
                    if call
                        .trailers
                        .as_ref()
                        .or(call.response_headers.as_ref())
                        .is_some_and(|h| h.maybe_unknown("grpc-status"))
                    {
                        notes.push(
                            "grpc-status refers to HPACK state from before the capture started"
                                .to_string(),
                        );
                        // Infer the outcome from what is known, and say so.
                        let inferred = match status.message.as_deref() {
                            Some(m) => super::code_for_message(m)
                                .map(|c| (c, "from the grpc-message text")),
                            None if call.response.messages.iter().any(|m| m.complete) => Some((
                                0,
                                "a response message was sent, which unary calls do only on success",
                            )),
                            None => None,
                        };
                        if let Some((code, why)) = inferred {
                            notes.push(format!(
                                "status {} inferred {why}",
                                code_name(code).unwrap_or("?")
                            ));
                            status.grpc_code = Some(code);
                            status.grpc_status = code_name(code);
                        }
                    } else if !grpc.raw_code.is_empty() {
                        notes.push(format!("unparseable grpc-status {:?}", grpc.raw_code));
                    } else {
                        notes.push("response ended without grpc-status".to_string());
                    }
                }
                status.ok = status.grpc_code == Some(0) && http_status.is_none_or(|s| s < 400);
            }
            Ending::Reset { by, code } => {
                let who = match by {
                    Dir::ToServer => "client",
                    Dir::ToClient => "server",
                };
                status.reset = Some(format!("RST_STREAM {} by {who}", error_name(code)));
                // No grpc-status was sent; say what a gRPC client reports
                // for this reset (PROTOCOL-HTTP2.md), without inventing one.
                if status.grpc_code.is_none() {
                    let mapped = match code {
                        0x7 => 14, // REFUSED_STREAM → UNAVAILABLE
                        0x8 => 1,  // CANCEL → CANCELLED
                        0xb => 8,  // ENHANCE_YOUR_CALM → RESOURCE_EXHAUSTED
                        0xc => 7,  // INADEQUATE_SECURITY → PERMISSION_DENIED
                        _ => 13,   // → INTERNAL
                    };
                    notes.push(format!(
                        "no grpc-status: the stream was reset ({}); a gRPC client reports {}",
                        error_name(code),
                        code_name(mapped).unwrap_or("?")
                    ));
                }
            }
            Ending::ConnectionClosed => {
                complete = false;
                status.reset = Some("connection closed before the response ended".to_string());
                notes.push("no end of response seen".to_string());
            }
            Ending::Expired => {
                complete = false;
                status.reset = Some("no response within the idle timeout".to_string());
                notes.push(
                    "reported when the idle timeout expired; the response may still come"
                        .to_string(),
                );
            }
        }

        let latency_ms = match (call.start_ts_ns, call.end_ts_ns) {
            (Some(s), Some(e)) if e >= s && call.ending == Ending::Completed => {
                Some((e - s) as f64 / 1e6)
            }
            _ => None,
        };
        let request_encoding = call
            .request_header("grpc-encoding")
            .filter(|e| *e != "identity")
            .map(str::to_string);
        // The request's version, else the one the server resolved (a label
        // or "latest" resolves to a number in the response's model_spec).
        let version = d.version.or(d.resolved_version);
        let wireshark_filter = {
            let (mut conn_id, mut stream) = (itoa::Buffer::new(), itoa::Buffer::new());
            let (conn_id, stream) = (conn_id.format(conn.id), stream.format(call.stream));
            let mut f = String::with_capacity(40 + conn_id.len() + stream.len());
            f.push_str("tcp.stream eq ");
            f.push_str(conn_id);
            f.push_str(" && http2.streamid eq ");
            f.push_str(stream);
            f
        };
        Box::new(Exchange {
            kind: "exchange",
            id,
            transport: Transport::Grpc,
            client: conn.client_text.clone(),
            server: conn.server_text.clone(),
            connection: conn.id,
            stream: Some(call.stream),
            request_frames: std::mem::take(&mut call.request_frames),
            response_frames: std::mem::take(&mut call.response_frames),
            request_id: call.request_header("x-request-id").map(str::to_string),
            method: method_name,
            path,
            model: d.model,
            version,
            version_label: d.version_label,
            signature: d.signature,
            inputs: d.inputs,
            outputs: d.outputs,
            output_filter: d.output_filter,
            examples: d.examples,
            tasks: d.tasks,
            results: d.results,
            signatures: d.signatures,
            model_status: d.model_status,
            request_encoding,
            request_bytes: call
                .request
                .messages
                .iter()
                .map(|m| u64::from(m.wire_len))
                .sum(),
            response_bytes: call
                .response
                .messages
                .iter()
                .map(|m| u64::from(m.wire_len))
                .sum(),
            start: call.start_ts_ns.map(rfc3339),
            latency_ms,
            status,
            complete,
            notes,
            diagnosis: None,
            warnings: Vec::new(),
            wireshark_filter,
            start_ts_ns: call.start_ts_ns,
            resolved_version: d.resolved_version,
            metadata_fields: d.metadata_fields,
            rest_format: None,
            http_method: None,
            protocol_problem: None,
            protocol_problem_certain: false,
        })
    }

    /// Records that client and server speak different protocols; `certain`
    /// when the bytes prove it, not when it is only the likely explanation.
    pub fn set_protocol_problem(&mut self, problem: String, certain: bool) {
        self.notes.push(format!(
            "protocol mismatch{}: {problem}",
            if certain { "" } else { " (probable)" }
        ));
        self.status.ok = false;
        self.protocol_problem = Some(problem);
        self.protocol_problem_certain = certain;
    }
}

/// Nanoseconds since the epoch → `2026-11-27T14:03:04.123456789Z`.
pub fn rfc3339(ts_ns: i64) -> String {
    // Once per exchange, and consecutive exchanges mostly share the second:
    // the date and time are kept from the last call.
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> =
            const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let secs = ts_ns.div_euclid(1_000_000_000);
    let nanos = ts_ns.rem_euclid(1_000_000_000) as u32;
    LAST.with_borrow_mut(|(second, text)| {
        if let Some(date_time) = text.get(..20).filter(|_| *second == secs) {
            let mut b = [0u8; 9];
            digits(&mut b, nanos);
            let mut s = String::with_capacity(30);
            s.push_str(date_time);
            s.extend(b.iter().map(|&d| char::from(d)));
            s.push('Z');
            return s;
        }
        *text = rfc3339_uncached(ts_ns);
        *second = secs;
        text.clone()
    })
}

fn rfc3339_uncached(ts_ns: i64) -> String {
    let secs = ts_ns.div_euclid(1_000_000_000);
    let nanos = ts_ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    // Written digit by digit: once per exchange, and `format!` costs several
    // times more. Every i64 of nanoseconds falls in years 1677..=2262.
    let Ok(year) = u32::try_from(y).map(|y| y.min(9999)) else {
        return "0000-01-01T00:00:00.000000000Z".to_string();
    };
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    digits(&mut b[0..4], year);
    digits(&mut b[5..7], m);
    digits(&mut b[8..10], d);
    digits(&mut b[11..13], (sod / 3600) as u32);
    digits(&mut b[14..16], (sod % 3600 / 60) as u32);
    digits(&mut b[17..19], (sod % 60) as u32);
    digits(&mut b[20..29], nanos as u32);
    std::str::from_utf8(&b)
        .map(str::to_owned)
        .unwrap_or_default()
}

/// Writes `n` as zero-padded decimal filling `out` (higher digits dropped).
fn digits(out: &mut [u8], mut n: u32) {
    for c in out.iter_mut().rev() {
        *c = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's civil-from-days algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_795_788_184_123_456_789),
            "2026-11-27T14:03:04.123456789Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }

    /// The digit-by-digit writer against `format!`, over the whole i64 range.
    #[test]
    fn timestamps_match_format() {
        let reference = |ts_ns: i64| {
            let secs = ts_ns.div_euclid(1_000_000_000);
            let nanos = ts_ns.rem_euclid(1_000_000_000);
            let sod = secs.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
            format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
                sod / 3600,
                sod % 3600 / 60,
                sod % 60
            )
        };
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut cases = vec![i64::MIN, i64::MAX, 0, -1, 1, 86_399_999_999_999];
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x as i64);
            cases.push((x % 4_000_000_000_000_000_000) as i64);
            // Calls within one second reuse its date and time.
            let within = (x % 4_000_000_000_000_000_000) as i64;
            cases
                .push(within - within.rem_euclid(1_000_000_000) + (x >> 34) as i64 % 1_000_000_000);
        }
        for ts in cases {
            assert_eq!(rfc3339(ts), reference(ts), "{ts}");
        }
    }
}
