//! Hand-written JSON for the `exchange` line: the same bytes serde_json
//! produces for [`Exchange`] (compact, fields in declaration order), without
//! serde's per-field machinery. One line per exchange makes this the largest
//! part of `--format jsonl` output.
//!
//! Every struct is destructured exhaustively, so adding a field to one of them
//! fails to compile here until the field is written too. Rare, nested parts
//! (signature maps, model status) and floats go through serde_json itself.

use std::borrow::Cow;

use serde::Serialize;

use crate::diagnose::{Confidence, Diagnosis};
use crate::tfserving::exchange::{Status, Transport};
use crate::tfserving::{Exchange, TensorSummary, ValueEncoding};

/// Appends `ex` as serde_json would write it (no trailing newline).
pub fn write_exchange(out: &mut Vec<u8>, ex: &Exchange) {
    write_exchange_marked(out, ex);
}

/// Offsets, from where [`write_exchange_marked`] began, of the values a
/// merger of sharded output rewrites (`(start, end)` of the digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    pub id: (usize, usize),
    pub connection: (usize, usize),
    /// Where the diagnosis value (`null` or an object) starts.
    pub diagnosis: usize,
    /// Just inside the warnings array's `[`.
    pub warnings: usize,
    /// The connection number in `wireshark_filter`, when it has one.
    pub filter: Option<(usize, usize)>,
}

/// [`write_exchange`], saying where it wrote the id, the connection, the
/// diagnosis and the warnings (so that nothing has to search the line for
/// them).
pub fn write_exchange_marked(out: &mut Vec<u8>, ex: &Exchange) -> Marks {
    let base = out.len();
    let span = |out: &Vec<u8>, start: usize| (start - base, out.len() - base);
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
    let at = out.len();
    int(out, *id);
    let id = span(out, at);
    out.extend_from_slice(match transport {
        Transport::Grpc => b",\"transport\":\"grpc\"".as_slice(),
        Transport::Rest => b",\"transport\":\"rest\"".as_slice(),
    });
    out.extend_from_slice(b",\"client\":");
    string(out, client);
    out.extend_from_slice(b",\"server\":");
    string(out, server);
    out.extend_from_slice(b",\"connection\":");
    let at = out.len();
    int(out, *connection);
    let connection = span(out, at);
    out.extend_from_slice(b",\"stream\":");
    opt_int(out, *stream);
    out.extend_from_slice(b",\"request_frames\":");
    ints(out, request_frames);
    out.extend_from_slice(b",\"response_frames\":");
    ints(out, response_frames);
    out.extend_from_slice(b",\"request_id\":");
    opt_string(out, request_id.as_deref());
    out.extend_from_slice(b",\"method\":");
    match method {
        Some(Cow::Borrowed(m)) => known_name(out, m),
        m => opt_string(out, m.as_deref()),
    }
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
    let diagnosis_at = out.len() - base;
    match diagnosis {
        Some(d) => write_diagnosis(out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"warnings\":");
    let warnings_at = out.len() + 1 - base;
    strings(out, warnings);
    out.extend_from_slice(b",\"wireshark_filter\":");
    // Past the opening quote; the prefix and digits need no escapes.
    let filter_at = out.len() + 1 - base;
    string(out, wireshark_filter);
    out.push(b'}');
    const FILTER_CONN: &str = "tcp.stream eq ";
    let filter = wireshark_filter.strip_prefix(FILTER_CONN).and_then(|rest| {
        let n = rest.bytes().take_while(u8::is_ascii_digit).count();
        let start = filter_at + FILTER_CONN.len();
        (n > 0).then_some((start, start + n))
    });
    Marks {
        id,
        connection,
        diagnosis: diagnosis_at,
        warnings: warnings_at,
        filter,
    }
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
    array(out, list, write_tensor);
}

/// `[a,b,…]`, each item written by `item`.
fn array<T>(out: &mut Vec<u8>, list: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, x) in list.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item(out, x);
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
    match dtype {
        Some(d) => known_name(out, d),
        None => out.extend_from_slice(b"null"),
    }
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
    out.extend_from_slice(match encoding {
        ValueEncoding::TensorContent => b",\"encoding\":\"tensor_content\"".as_slice(),
        ValueEncoding::Typed => b",\"encoding\":\"typed\"",
        ValueEncoding::Empty => b",\"encoding\":\"empty\"",
        ValueEncoding::Json => b",\"encoding\":\"json\"",
    });
    if !fields.is_empty() {
        out.extend_from_slice(b",\"fields\":");
        array(out, fields, |out, f| known_name(out, f));
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

pub fn write_diagnosis(out: &mut Vec<u8>, d: &Diagnosis) {
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
    out.extend_from_slice(match confidence {
        Confidence::Possible => b",\"confidence\":\"possible\"".as_slice(),
        Confidence::Likely => b",\"confidence\":\"likely\"",
        Confidence::Certain => b",\"confidence\":\"certain\"",
    });
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

pub fn int<N: itoa::Integer + TryInto<u8>>(out: &mut Vec<u8>, n: N) {
    // Most numbers of a line are one digit (connection, stream, version,
    // dimensions): one byte, not a formatted copy.
    match n.try_into() {
        Ok(d) if d < 10 => out.push(b'0' + d),
        _ => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
    }
}

fn opt_int(out: &mut Vec<u8>, n: Option<impl itoa::Integer + TryInto<u8>>) {
    match n {
        Some(n) => int(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

fn ints(out: &mut Vec<u8>, list: &[impl itoa::Integer + TryInto<u8> + Copy]) {
    array(out, list, |out, &n| int(out, n));
}

fn strings<S: AsRef<str>>(out: &mut Vec<u8>, list: &[S]) {
    array(out, list, |out, s| string(out, s.as_ref()));
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
/// A name from tfwire's own tables (dtypes, field names): nothing to escape,
/// so nothing is checked.
fn known_name(out: &mut Vec<u8>, s: &'static str) {
    debug_assert!(!needs_escape(s.as_bytes()), "{s}");
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

pub fn string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        serde(out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether any byte is below 0x20, a quote or a backslash; eight bytes at a
/// time (the SWAR "has a byte less than / equal to" tests, which never miss a
/// byte; a false alarm would only send the string through serde_json).
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // High bit set in each byte that is zero (below 0x20 for the first),
    // or in some byte after one; combined without branches.
    let zeros = |x: u64| x.wrapping_sub(ONES) & !x;
    let hit = |x: u64| {
        let below_space = x.wrapping_sub(ONES * 0x20) & !x;
        let quote = zeros(x ^ (ONES * u64::from(b'"')));
        let backslash = zeros(x ^ (ONES * u64::from(b'\\')));
        (below_space | quote | backslash) & HIGH != 0
    };
    let word = |c: &[u8]| <[u8; 8]>::try_from(c).map_or(0, u64::from_ne_bytes);
    let Some(last) = b.len().checked_sub(8) else {
        // Short strings byte by byte: padding them to a word costs a memcpy call.
        return b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
    };
    if b.chunks_exact(8).any(|c| hit(word(c))) {
        return true;
    }
    // The last 8 bytes, overlapping what the chunks covered.
    hit(word(&b[last..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tfserving::exchange::VersionStatus;
    use crate::tfserving::signature::{Signature, TensorSpec};

    /// xorshift64*: deterministic cases without a dev-dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn coin(&mut self) -> bool {
            self.below(2) == 0
        }

        /// Text mixing plain ASCII with every kind of character JSON escapes
        /// or passes through: quotes, backslashes, C0 controls, DEL, non-ASCII.
        fn text(&mut self) -> String {
            const SPECIAL: &[char] = &[
                '"', '\\', '/', '\u{0}', '\u{8}', '\u{9}', '\u{a}', '\u{c}', '\u{d}', '\u{1b}',
                '\u{1f}', '\u{7f}', '\u{80}', 'é', '€', '\u{2028}', '\u{fffd}', '😀',
            ];
            let len = self.below(12);
            (0..len)
                .map(|_| match self.below(4) {
                    0 => SPECIAL[self.below(SPECIAL.len() as u64) as usize],
                    _ => char::from(b' ' + self.below(95) as u8),
                })
                .collect()
        }

        fn opt_text(&mut self) -> Option<String> {
            self.coin().then(|| self.text())
        }

        fn texts(&mut self) -> Vec<String> {
            (0..self.below(3)).map(|_| self.text()).collect()
        }

        fn int(&mut self) -> i64 {
            match self.below(5) {
                0 => i64::MIN,
                1 => i64::MAX,
                2 => -(self.below(1000) as i64),
                3 => self.below(12) as i64,
                _ => self.next() as i64,
            }
        }

        /// An unsigned number: often one or two digits, as most are.
        fn num(&mut self) -> u64 {
            if self.coin() {
                self.below(12)
            } else {
                self.next()
            }
        }

        fn dims(&mut self) -> Option<Vec<i64>> {
            self.coin()
                .then(|| (0..self.below(4)).map(|_| self.int()).collect())
        }

        fn tensor(&mut self) -> TensorSummary {
            TensorSummary {
                name: if self.coin() {
                    String::new()
                } else {
                    self.text()
                },
                dtype: self.coin().then_some("DT_FLOAT"),
                dtype_code: self.coin().then(|| self.int() as i32),
                shape: self.dims(),
                values: self.coin().then(|| self.num()),
                encoding: [
                    ValueEncoding::TensorContent,
                    ValueEncoding::Typed,
                    ValueEncoding::Empty,
                    ValueEncoding::Json,
                ][self.below(4) as usize],
                fields: (0..self.below(3)).map(|_| "float_val").collect(),
                bytes: self.num(),
                problems: self.texts(),
                json: self.coin().then(|| vec!["float", "int"]),
            }
        }

        fn exchange(&mut self) -> Exchange {
            let latency = [None, Some(0.0), Some(4.437), Some(1e-7), Some(1e300)];
            Exchange {
                kind: "exchange",
                id: self.num(),
                transport: if self.coin() {
                    Transport::Grpc
                } else {
                    Transport::Rest
                },
                client: self.text(),
                server: self.text(),
                connection: self.num(),
                stream: self.coin().then(|| self.num() as u32),
                request_frames: (0..self.below(4)).map(|_| self.num()).collect(),
                response_frames: (0..self.below(4)).map(|_| self.next()).collect(),
                request_id: self.opt_text(),
                method: self.opt_text().map(Into::into),
                path: self.opt_text(),
                model: self.opt_text(),
                version: self.coin().then(|| self.int()),
                version_label: self.opt_text(),
                signature: self.opt_text(),
                inputs: (0..self.below(3)).map(|_| self.tensor()).collect(),
                outputs: (0..self.below(3)).map(|_| self.tensor()).collect(),
                output_filter: self.texts(),
                examples: self.coin().then(|| self.num()),
                tasks: self.texts(),
                results: self.coin().then(|| self.next()),
                signatures: self.coin().then(|| {
                    let spec = TensorSpec {
                        alias: self.text(),
                        dtype: self.opt_text(),
                        shape: self.dims(),
                        tensor_name: self.opt_text(),
                    };
                    [(
                        self.text(),
                        Signature {
                            method_name: self.text(),
                            inputs: vec![spec.clone()],
                            outputs: vec![spec],
                            defaults: self.texts(),
                        },
                    )]
                    .into_iter()
                    .collect()
                }),
                model_status: self.coin().then(|| {
                    vec![VersionStatus {
                        version: self.int(),
                        state: self.text(),
                        error_code: self.coin().then(|| self.int() as i32),
                        error_message: self.opt_text(),
                    }]
                }),
                request_encoding: self.opt_text(),
                rest_format: self.coin().then_some("row"),
                http_method: self.opt_text(),
                request_bytes: self.num(),
                response_bytes: self.next(),
                start: self.opt_text(),
                latency_ms: latency[self.below(5) as usize],
                status: Status {
                    ok: self.coin(),
                    grpc_code: self.coin().then(|| self.num() as u32),
                    grpc_status: self.coin().then_some("INVALID_ARGUMENT"),
                    http_status: self.coin().then(|| self.next() as u16),
                    message: self.opt_text(),
                    reset: self.opt_text(),
                },
                complete: self.coin(),
                notes: self.texts(),
                diagnosis: self.coin().then(|| {
                    Box::new(Diagnosis {
                        category: "dtype_mismatch",
                        input: self.opt_text(),
                        sent_dtype: self.opt_text(),
                        expected_dtype: self.opt_text(),
                        sent_shape: self.dims(),
                        expected_shape: self.dims(),
                        summary: self.text(),
                        fix: self.text(),
                        evidence: self.texts(),
                        confidence: [
                            Confidence::Possible,
                            Confidence::Likely,
                            Confidence::Certain,
                        ][self.below(3) as usize],
                    })
                }),
                warnings: self.texts(),
                wireshark_filter: self.text(),
                start_ts_ns: self.coin().then(|| self.int()),
                resolved_version: None,
                metadata_fields: self.texts(),
                protocol_problem: self.opt_text(),
                protocol_problem_certain: self.coin(),
            }
        }
    }

    /// One-digit numbers take a shortcut; every type and value must still
    /// read as itoa writes it.
    #[test]
    fn numbers_are_written_like_itoa() {
        fn check<N: itoa::Integer + TryInto<u8> + Copy>(n: N) {
            let mut out = Vec::new();
            int(&mut out, n);
            assert_eq!(out, itoa::Buffer::new().format(n).as_bytes());
        }
        for n in -20i64..=300 {
            check(n);
            check(n as i8);
            check(n as i32);
            check(n as u8);
            check(n as u16);
            check(n as u32);
            check(n as u64);
        }
        check(u64::MAX);
        check(i64::MIN);
    }

    #[test]
    fn exchanges_serialize_as_serde_json_does() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5000 {
            let ex = rng.exchange();
            let mut ours = Vec::new();
            write_exchange(&mut ours, &ex);
            let theirs = serde_json::to_vec(&ex).expect("serialize");
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
        }
    }

    #[test]
    fn strings_escape_as_serde_json_does() {
        // Every character below 0x80 alone and between plain text, then random mixes.
        for c in (0u8..0x80).map(char::from).chain(['é', '\u{2028}', '😀']) {
            for s in [c.to_string(), format!("a{c}b{c}")] {
                let mut ours = Vec::new();
                string(&mut ours, &s);
                assert_eq!(ours, serde_json::to_vec(&s).expect("serialize"), "{s:?}");
            }
        }
        let mut rng = Rng(7);
        for _ in 0..20_000 {
            let s = rng.text();
            let mut ours = Vec::new();
            string(&mut ours, &s);
            assert_eq!(ours, serde_json::to_vec(&s).expect("serialize"), "{s:?}");
        }
    }

    #[test]
    fn escape_scan_finds_every_byte_that_needs_it() {
        for len in 0..20 {
            for pos in 0..len {
                for c in 0u8..=255 {
                    let mut b = vec![b'a'; len];
                    b[pos] = c;
                    let expected = c < 0x20 || c == b'"' || c == b'\\';
                    assert_eq!(needs_escape(&b), expected, "{len} {pos} {c}");
                }
            }
        }
    }

    #[test]
    fn lines_are_buffered_and_flushed_in_order() {
        let mut rng = Rng(11);
        let exchanges: Vec<Exchange> = (0..300).map(|_| rng.exchange()).collect();
        let mut expected = Vec::new();
        let mut j = super::super::JsonLines::new(Vec::new(), false);
        for ex in &exchanges {
            assert!(j.exchange(ex));
            expected.extend(serde_json::to_vec(ex).expect("serialize"));
            expected.push(b'\n');
            assert!(j.write(&serde_json::json!({"n": 1})));
            expected.extend_from_slice(b"{\"n\":1}\n");
        }
        j.finish().expect("finish");
        assert_eq!(j.out, expected);
    }
}
