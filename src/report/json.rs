//! Hand-written JSON for the `exchange` line: the same bytes serde_json
//! produces for [`Exchange`] (compact, fields in declaration order), without
//! serde's per-field machinery. One line per exchange makes this the largest
//! part of `--format jsonl` output.
//!
//! Every struct is destructured exhaustively, so adding a field to one of them
//! fails to compile here until the field is written too. Rare, nested parts
//! (signature maps, model status) and floats go through serde_json itself.

use serde::Serialize;

use crate::diagnose::Diagnosis;
use crate::tfserving::exchange::{Status, Transport};
use crate::tfserving::{Exchange, TensorSummary};

/// Appends `ex` as serde_json would write it (no trailing newline).
pub fn write_exchange(out: &mut Vec<u8>, ex: &Exchange) {
    let Exchange {
        kind,
        id,
        transport,
        client,
        server,
        connection,
        stream,
        request_frames,
        response_frames,
        request_id,
        method,
        path,
        model,
        version,
        version_label,
        signature,
        inputs,
        outputs,
        output_filter,
        examples,
        tasks,
        results,
        signatures,
        model_status,
        request_encoding,
        rest_format,
        http_method,
        request_bytes,
        response_bytes,
        start,
        latency_ms,
        status,
        complete,
        notes,
        diagnosis,
        warnings,
        wireshark_filter,
        // Not serialized.
        start_ts_ns: _,
        resolved_version: _,
        metadata_fields: _,
        protocol_problem: _,
        protocol_problem_certain: _,
    } = ex;
    out.extend_from_slice(b"{\"type\":");
    string(out, kind);
    out.extend_from_slice(b",\"id\":");
    int(out, *id);
    out.extend_from_slice(match transport {
        Transport::Grpc => b",\"transport\":\"grpc\"".as_slice(),
        Transport::Rest => b",\"transport\":\"rest\"".as_slice(),
    });
    out.extend_from_slice(b",\"client\":");
    string(out, client);
    out.extend_from_slice(b",\"server\":");
    string(out, server);
    out.extend_from_slice(b",\"connection\":");
    int(out, *connection);
    out.extend_from_slice(b",\"stream\":");
    opt_int(out, *stream);
    out.extend_from_slice(b",\"request_frames\":");
    ints(out, request_frames);
    out.extend_from_slice(b",\"response_frames\":");
    ints(out, response_frames);
    out.extend_from_slice(b",\"request_id\":");
    opt_string(out, request_id.as_deref());
    out.extend_from_slice(b",\"method\":");
    opt_string(out, method.as_deref());
    out.extend_from_slice(b",\"path\":");
    opt_string(out, path.as_deref());
    out.extend_from_slice(b",\"model\":");
    opt_string(out, model.as_deref());
    out.extend_from_slice(b",\"version\":");
    opt_int(out, *version);
    out.extend_from_slice(b",\"version_label\":");
    opt_string(out, version_label.as_deref());
    out.extend_from_slice(b",\"signature\":");
    opt_string(out, signature.as_deref());
    out.extend_from_slice(b",\"inputs\":");
    tensors(out, inputs);
    out.extend_from_slice(b",\"outputs\":");
    tensors(out, outputs);
    if !output_filter.is_empty() {
        out.extend_from_slice(b",\"output_filter\":");
        strings(out, output_filter);
    }
    if let Some(n) = examples {
        out.extend_from_slice(b",\"examples\":");
        int(out, *n);
    }
    if !tasks.is_empty() {
        out.extend_from_slice(b",\"tasks\":");
        strings(out, tasks);
    }
    if let Some(n) = results {
        out.extend_from_slice(b",\"results\":");
        int(out, *n);
    }
    if let Some(s) = signatures {
        out.extend_from_slice(b",\"signatures\":");
        serde(out, s);
    }
    if let Some(s) = model_status {
        out.extend_from_slice(b",\"model_status\":");
        serde(out, s);
    }
    if let Some(s) = request_encoding {
        out.extend_from_slice(b",\"request_encoding\":");
        string(out, s);
    }
    if let Some(s) = rest_format {
        out.extend_from_slice(b",\"rest_format\":");
        string(out, s);
    }
    if let Some(s) = http_method {
        out.extend_from_slice(b",\"http_method\":");
        string(out, s);
    }
    out.extend_from_slice(b",\"request_bytes\":");
    int(out, *request_bytes);
    out.extend_from_slice(b",\"response_bytes\":");
    int(out, *response_bytes);
    out.extend_from_slice(b",\"start\":");
    opt_string(out, start.as_deref());
    out.extend_from_slice(b",\"latency_ms\":");
    serde(out, latency_ms);
    out.extend_from_slice(b",\"status\":");
    write_status(out, status);
    out.extend_from_slice(b",\"complete\":");
    boolean(out, *complete);
    out.extend_from_slice(b",\"notes\":");
    strings(out, notes);
    out.extend_from_slice(b",\"diagnosis\":");
    match diagnosis {
        Some(d) => write_diagnosis(out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"warnings\":");
    strings(out, warnings);
    out.extend_from_slice(b",\"wireshark_filter\":");
    string(out, wireshark_filter);
    out.push(b'}');
}

fn write_status(out: &mut Vec<u8>, s: &Status) {
    let Status {
        ok,
        grpc_code,
        grpc_status,
        http_status,
        message,
        reset,
    } = s;
    out.extend_from_slice(b"{\"ok\":");
    boolean(out, *ok);
    out.extend_from_slice(b",\"grpc_code\":");
    opt_int(out, *grpc_code);
    out.extend_from_slice(b",\"grpc_status\":");
    opt_string(out, *grpc_status);
    out.extend_from_slice(b",\"http_status\":");
    opt_int(out, *http_status);
    out.extend_from_slice(b",\"message\":");
    opt_string(out, message.as_deref());
    if let Some(r) = reset {
        out.extend_from_slice(b",\"reset\":");
        string(out, r);
    }
    out.push(b'}');
}

fn tensors(out: &mut Vec<u8>, list: &[TensorSummary]) {
    out.push(b'[');
    for (i, t) in list.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_tensor(out, t);
    }
    out.push(b']');
}

fn write_tensor(out: &mut Vec<u8>, t: &TensorSummary) {
    let TensorSummary {
        name,
        dtype,
        dtype_code,
        shape,
        values,
        encoding,
        fields,
        bytes,
        problems,
        json,
    } = t;
    out.extend_from_slice(b"{\"name\":");
    // An empty alias is written as null (see TensorSummary::name).
    opt_string(out, Some(name.as_str()).filter(|n| !n.is_empty()));
    out.extend_from_slice(b",\"dtype\":");
    opt_string(out, *dtype);
    if let Some(c) = dtype_code {
        out.extend_from_slice(b",\"dtype_code\":");
        int(out, *c);
    }
    out.extend_from_slice(b",\"shape\":");
    match shape {
        Some(dims) => ints(out, dims),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"values\":");
    opt_int(out, *values);
    out.extend_from_slice(b",\"encoding\":");
    serde(out, encoding);
    if !fields.is_empty() {
        out.extend_from_slice(b",\"fields\":");
        strings(out, fields);
    }
    out.extend_from_slice(b",\"bytes\":");
    int(out, *bytes);
    if !problems.is_empty() {
        out.extend_from_slice(b",\"problems\":");
        strings(out, problems);
    }
    if let Some(j) = json {
        out.extend_from_slice(b",\"json\":");
        strings(out, j);
    }
    out.push(b'}');
}

fn write_diagnosis(out: &mut Vec<u8>, d: &Diagnosis) {
    let Diagnosis {
        category,
        input,
        sent_dtype,
        expected_dtype,
        sent_shape,
        expected_shape,
        summary,
        fix,
        evidence,
        confidence,
    } = d;
    out.extend_from_slice(b"{\"category\":");
    string(out, category);
    out.extend_from_slice(b",\"input\":");
    opt_string(out, input.as_deref());
    out.extend_from_slice(b",\"sent_dtype\":");
    opt_string(out, sent_dtype.as_deref());
    out.extend_from_slice(b",\"expected_dtype\":");
    opt_string(out, expected_dtype.as_deref());
    for (key, dims) in [
        (b",\"sent_shape\":".as_slice(), sent_shape),
        (b",\"expected_shape\":".as_slice(), expected_shape),
    ] {
        out.extend_from_slice(key);
        match dims {
            Some(dims) => ints(out, dims),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b",\"summary\":");
    string(out, summary);
    out.extend_from_slice(b",\"fix\":");
    string(out, fix);
    out.extend_from_slice(b",\"evidence\":");
    strings(out, evidence);
    out.extend_from_slice(b",\"confidence\":");
    serde(out, confidence);
    out.push(b'}');
}

/// Anything else, through serde_json (writing to a Vec cannot fail, and
/// these types serialize infallibly).
fn serde<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let start = out.len();
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"null");
    }
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn opt_int(out: &mut Vec<u8>, n: Option<impl itoa::Integer>) {
    match n {
        Some(n) => int(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

fn ints(out: &mut Vec<u8>, list: &[impl itoa::Integer + Copy]) {
    out.push(b'[');
    for (i, &n) in list.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        int(out, n);
    }
    out.push(b']');
}

fn strings<S: AsRef<str>>(out: &mut Vec<u8>, list: &[S]) {
    out.push(b'[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, s.as_ref());
    }
    out.push(b']');
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string. Text that needs no escape (nearly all of it) is copied as
/// is; anything with a quote, backslash or control character is escaped by
/// serde_json, so escapes are spelled exactly as before.
pub fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        serde(out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}
