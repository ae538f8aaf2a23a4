//! The closing `{"type":"summary"}` record: counts over all exchanges and the
//! capture statistics of every stage.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::capture::CaptureStats;
use crate::net::NetStats;
use crate::pipeline::ProtoStats;
use crate::tfserving::Exchange;

/// Failures that share one root cause.
#[derive(Debug, Clone, Serialize)]
pub struct RootCause {
    pub category: String,
    pub model: Option<String>,
    pub signature: Option<String>,
    pub input: Option<String>,
    pub sent: Option<String>,
    pub expected: Option<String>,
    pub summary: String,
    pub fix: String,
    pub count: u64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub first_exchange: u64,
    pub clients: Vec<String>,
    #[serde(skip)]
    first_ts: Option<i64>,
    #[serde(skip)]
    last_ts: Option<i64>,
}

/// Clients listed per root cause; more are counted in `clients_total`.
const MAX_CLIENTS: usize = 20;

#[derive(Debug, Default, Clone, Serialize)]
pub struct CaptureTotals {
    pub files: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
    pub truncated_packets: u64,
    pub cut_short: Vec<String>,
    pub first_packet: Option<String>,
    pub last_packet: Option<String>,
}

impl CaptureTotals {
    pub fn add(&mut self, name: &str, s: &CaptureStats) {
        self.files.push(name.to_string());
        self.packets += s.packets;
        self.bytes += s.bytes;
        self.truncated_packets += s.truncated_packets;
        if let Some(c) = &s.cut_short {
            self.cut_short.push(format!("{name}: {c}"));
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub schema: u32,
    pub exchanges: u64,
    pub failures: u64,
    pub incomplete: u64,
    pub by_method: BTreeMap<String, u64>,
    pub failures_by_status: BTreeMap<String, u64>,
    pub failures_by_category: BTreeMap<String, u64>,
    pub failures_by_model: BTreeMap<String, u64>,
    pub root_causes: Vec<RootCause>,
    pub capture: CaptureTotals,
    pub network: NetStats,
    pub protocols: ProtoStats,
    /// Every buffer limit that was reached, with how often (empty: none).
    pub limits_hit: BTreeMap<&'static str, u64>,
    #[serde(skip)]
    index: BTreeMap<String, usize>,
    /// Buffers for the root-cause key, kept between failures.
    #[serde(skip)]
    key: String,
    #[serde(skip)]
    key_part: String,
}

impl Summary {
    pub fn new() -> Summary {
        Summary {
            kind: "summary",
            schema: 1,
            ..Summary::default()
        }
    }

    pub fn add(&mut self, ex: &Exchange) {
        self.exchanges += 1;
        if !ex.complete {
            self.incomplete += 1;
        }
        bump(
            &mut self.by_method,
            ex.method.as_deref().unwrap_or("unknown"),
        );
        if ex.status.ok {
            return;
        }
        self.failures += 1;
        match (ex.status.grpc_status, ex.status.http_status) {
            (Some(s), _) => bump(&mut self.failures_by_status, s),
            (None, Some(h)) => bump(&mut self.failures_by_status, &format!("HTTP {h}")),
            (None, None) => bump(&mut self.failures_by_status, "unknown"),
        }
        bump(
            &mut self.failures_by_model,
            ex.model.as_deref().unwrap_or("unknown"),
        );
        let d = ex.diagnosis.as_deref();
        let category = d.map_or("undiagnosed", |d| d.category);
        bump(&mut self.failures_by_category, category);

        // Group by what was sent and expected; the batch size itself does
        // not make a different cause (except when it is the cause).
        let any_batch = category != "batch_size_mismatch" && category != "missing_batch_dim";
        // What was sent (false) or expected (true), into `out`.
        let tensor = |out: &mut String, expected: bool| {
            d.is_some_and(|d| {
                let (dtype, shape) = if expected {
                    (&d.expected_dtype, &d.expected_shape)
                } else {
                    (&d.sent_dtype, &d.sent_shape)
                };
                tensor_text(out, dtype.as_deref(), shape.as_deref(), any_batch)
            })
        };
        let input = d.and_then(|d| d.input.as_deref());
        // Without a diagnosis, the server's message is the best grouping key.
        // Diagnoses that name no input (model, version, signature, URL…)
        // differ by their words; a tensor defect by what is wrong with it.
        let message_key = match d {
            None => ex.status.message.as_deref().or(ex.status.reset.as_deref()),
            Some(d) if d.input.is_none() || d.category == "malformed_tensor" => {
                Some(d.summary.as_str())
            }
            Some(_) => None,
        };
        // A model or version that does not exist is one cause whatever the
        // method or signature of the calls that hit it.
        let signature_key = match category {
            "model_not_found" | "version_not_found" => None,
            _ => ex.signature.as_deref(),
        };
        // The grouping key, built in buffers kept between calls: this runs
        // for every failure.
        let mut key = std::mem::take(&mut self.key);
        let mut part = std::mem::take(&mut self.key_part);
        key.clear();
        key_part(&mut key, Some(category));
        key_part(&mut key, ex.model.as_deref());
        key_part(&mut key, signature_key);
        key_part(&mut key, input);
        for expected in [false, true] {
            part.clear();
            key_part(
                &mut key,
                tensor(&mut part, expected).then_some(part.as_str()),
            );
        }
        key_part(&mut key, message_key);
        let idx = match self.index.get(key.as_str()) {
            Some(&i) => i,
            None => {
                let owned = |expected: bool| {
                    let mut s = String::new();
                    tensor(&mut s, expected).then_some(s)
                };
                let summary = d.map(|d| d.summary.clone()).unwrap_or_else(|| {
                    message_key.map(str::to_string).unwrap_or_else(|| {
                        format!(
                            "{status_line} failure",
                            status_line = ex.status.grpc_status.unwrap_or("unknown")
                        )
                    })
                });
                self.root_causes.push(RootCause {
                    category: category.to_string(),
                    model: ex.model.clone(),
                    signature: signature_key.map(str::to_string),
                    input: input.map(str::to_string),
                    sent: owned(false),
                    expected: owned(true),
                    summary,
                    fix: d.map(|d| d.fix.clone()).unwrap_or_default(),
                    count: 0,
                    first_seen: None,
                    last_seen: None,
                    first_exchange: ex.id,
                    clients: Vec::new(),
                    first_ts: None,
                    last_ts: None,
                });
                self.index.insert(key.clone(), self.root_causes.len() - 1);
                self.root_causes.len() - 1
            }
        };
        self.key = key;
        self.key_part = part;
        let rc = &mut self.root_causes[idx];
        rc.count += 1;
        if let Some(ts) = ex.start_ts_ns {
            if rc.first_ts.is_none_or(|f| ts < f) {
                rc.first_ts = Some(ts);
                rc.first_seen = ex.start.clone();
            }
            if rc.last_ts.is_none_or(|l| ts > l) {
                rc.last_ts = Some(ts);
                rc.last_seen = ex.start.clone();
            }
        }
        // Clients by address without the ephemeral port.
        if rc.clients.len() < MAX_CLIENTS {
            let client = client_host(&ex.client);
            if !rc.clients.iter().any(|c| *c == client) {
                rc.clients.push(client.into_owned());
            }
        }
    }

    /// Orders root causes by count (most frequent first), stable by first
    /// exchange, and collects the limits that were hit.
    pub fn finish(&mut self) {
        let n = &self.network;
        let p = &self.protocols;
        for (name, count) in [
            ("flow_buffer", n.reassembly_limit_hits),
            ("flows_open", n.flows_evicted),
            ("grpc_message", p.messages_over_limit),
            ("http2_frame", p.http2.oversized_frames),
            ("http1_body", p.http1.bodies_over_limit),
            ("streams_open", p.untracked_streams),
        ] {
            if count > 0 {
                self.limits_hit.insert(name, count);
            }
        }
        self.root_causes.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.first_exchange.cmp(&b.first_exchange))
        });
    }
}

/// Counts one more under `key`, allocating the key only the first time.
fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

/// `10.0.0.5:53422` → `10.0.0.5` (clients are hosts; ports are ephemeral).
/// IPv4 is borrowed as written (the parser accepts only the canonical
/// form); IPv6 is rewritten without brackets or zone; other text is kept.
pub fn client_host(addr: &str) -> std::borrow::Cow<'_, str> {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(std::net::SocketAddr::V4(_)) => match addr.rsplit_once(':') {
            Some((host, _)) => host.into(),
            None => addr.into(),
        },
        Ok(a) => a.ip().to_string().into(),
        Err(_) => addr.into(),
    }
}

/// One part of a root-cause key: `-` for none, else its length, `:` and the
/// text, so that distinct parts never run together into the same key.
fn key_part(key: &mut String, part: Option<&str>) {
    match part {
        None => key.push('-'),
        Some(s) => {
            key.push_str(itoa::Buffer::new().format(s.len()));
            key.push(':');
            key.push_str(s);
        }
    }
}

/// What a root cause says was sent or expected: the dtype and the shape
/// (batch dimension as `?` when `any_batch`), space-separated and trimmed;
/// false (nothing written) when neither is known.
fn tensor_text(
    out: &mut String,
    dtype: Option<&str>,
    shape: Option<&[i64]>,
    any_batch: bool,
) -> bool {
    if dtype.is_none() && shape.is_none() {
        return false;
    }
    let start = out.len();
    out.push_str(dtype.unwrap_or(""));
    out.push(' ');
    if let Some(dims) = shape {
        out.push('[');
        for (i, &d) in dims.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if d < 0 || (i == 0 && any_batch && dims.len() > 1) {
                out.push('?');
            } else {
                out.push_str(itoa::Buffer::new().format(d));
            }
        }
        out.push(']');
    }
    let end = start + out[start..].trim_end().len();
    out.truncate(end);
    let lead = out[start..].len() - out[start..].trim_start().len();
    out.drain(start..start + lead);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_host_matches_the_parsed_address() {
        for addr in [
            "10.0.0.5:53422",
            "0.0.0.0:1",
            "255.255.255.255:65535",
            "[::1]:8500",
            "[fe80::1%3]:8500",
            "[2001:db8::1]:443",
            "010.0.0.5:80",
            "10.0.0.5",
            "host:80",
            "",
        ] {
            let want = match addr.parse::<std::net::SocketAddr>() {
                Ok(a) => a.ip().to_string(),
                Err(_) => addr.to_string(),
            };
            assert_eq!(client_host(addr), want, "{addr}");
        }
    }

    #[test]
    fn tensor_text_is_dtype_and_shape_trimmed() {
        let shapes: [Option<&[i64]>; 5] = [
            None,
            Some(&[]),
            Some(&[5]),
            Some(&[7, -1, 3]),
            Some(&[-1, 2]),
        ];
        for dtype in [None, Some("DT_FLOAT"), Some(""), Some(" x ")] {
            for shape in shapes {
                for any_batch in [false, true] {
                    // The text as first written: format, join, trim.
                    let want = match (dtype, shape) {
                        (None, None) => None,
                        _ => {
                            let shape = shape.map(|dims| {
                                let parts: Vec<String> = dims
                                    .iter()
                                    .enumerate()
                                    .map(|(i, &d)| {
                                        if d < 0 || (i == 0 && any_batch && dims.len() > 1) {
                                            "?".to_string()
                                        } else {
                                            d.to_string()
                                        }
                                    })
                                    .collect();
                                format!("[{}]", parts.join(","))
                            });
                            Some(
                                format!("{} {}", dtype.unwrap_or(""), shape.unwrap_or_default())
                                    .trim()
                                    .to_string(),
                            )
                        }
                    };
                    let mut out = String::from("prefix");
                    let wrote = tensor_text(&mut out, dtype, shape, any_batch);
                    assert_eq!(wrote, want.is_some());
                    assert_eq!(out, format!("prefix{}", want.unwrap_or_default()));
                }
            }
        }
    }

    #[test]
    fn key_parts_never_run_together() {
        let key = |parts: &[Option<&str>]| {
            let mut k = String::new();
            for p in parts {
                key_part(&mut k, *p);
            }
            k
        };
        assert_ne!(key(&[Some("a"), Some("b")]), key(&[Some("ab"), Some("")]));
        assert_ne!(key(&[None, Some("x")]), key(&[Some("-"), Some("x")]));
        assert_ne!(key(&[Some(""), None]), key(&[None, Some("")]));
        assert_ne!(key(&[Some("1:a")]), key(&[Some("1"), Some("a")]));
        assert_eq!(key(&[Some("fraud"), None]), "5:fraud-");
    }

    #[test]
    fn failures_group_by_cause_whatever_the_batch() {
        let mut s = Summary::new();
        for (i, batch) in [(1u64, 3i64), (2, 5), (3, 5)] {
            let mut ex = crate::pipeline::fixture_exchanges("grpc_diagnosis.pcapng")
                .into_iter()
                .find(|e| !e.status.ok)
                .expect("a failing call in the fixture");
            ex.id = i;
            ex.client = format!("10.0.0.{i}:4000{i}");
            ex.diagnosis = Some(Box::new(crate::diagnose::Diagnosis {
                category: "dtype_mismatch",
                input: Some("x".into()),
                sent_dtype: Some("DT_DOUBLE".into()),
                expected_dtype: Some("DT_FLOAT".into()),
                sent_shape: Some(vec![batch, 4]),
                expected_shape: None,
                summary: format!("call {i}"),
                fix: String::new(),
                evidence: Vec::new(),
                confidence: crate::diagnose::Confidence::Certain,
            }));
            s.add(&ex);
        }
        assert_eq!(s.root_causes.len(), 1, "{:?}", s.root_causes);
        let rc = &s.root_causes[0];
        assert_eq!(rc.count, 3);
        assert_eq!(rc.sent.as_deref(), Some("DT_DOUBLE [?,4]"));
        assert_eq!(rc.clients, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(rc.expected.as_deref(), Some("DT_FLOAT"));
        assert_eq!(rc.summary, "call 1");
        assert_eq!(s.failures_by_category.get("dtype_mismatch"), Some(&3));
    }
}
