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
        let status = match (ex.status.grpc_status, ex.status.http_status) {
            (Some(s), _) => s.to_string(),
            (None, Some(h)) => format!("HTTP {h}"),
            (None, None) => "unknown".to_string(),
        };
        *self.failures_by_status.entry(status).or_default() += 1;
        bump(
            &mut self.failures_by_model,
            ex.model.as_deref().unwrap_or("unknown"),
        );
        let category = ex
            .diagnosis
            .as_ref()
            .map(|d| d.category.to_string())
            .unwrap_or_else(|| "undiagnosed".to_string());
        *self
            .failures_by_category
            .entry(category.clone())
            .or_default() += 1;

        let d = ex.diagnosis.as_ref();
        // Group by what was sent and expected; the batch size itself does
        // not make a different cause (except when it is the cause).
        let shape_key = |s: &Option<Vec<i64>>, category: &str| {
            s.as_ref().map(|dims| {
                let mut dims = dims.clone();
                if category != "batch_size_mismatch"
                    && category != "missing_batch_dim"
                    && dims.len() > 1
                {
                    dims[0] = -1;
                }
                crate::tfserving::dtype::shape_string(&dims)
            })
        };
        let join = |a: Option<String>, b: Option<String>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(
                format!("{} {}", a.unwrap_or_default(), b.unwrap_or_default())
                    .trim()
                    .to_string(),
            ),
        };
        let sent = d.and_then(|d| join(d.sent_dtype.clone(), shape_key(&d.sent_shape, d.category)));
        let expected = d.and_then(|d| {
            join(
                d.expected_dtype.clone(),
                shape_key(&d.expected_shape, d.category),
            )
        });
        let input = d.and_then(|d| d.input.clone());
        // Without a diagnosis, the server's message is the best grouping key.
        // Diagnoses that name no input (model, version, signature, URL…)
        // differ by their words; a tensor defect by what is wrong with it.
        let message_key = match d {
            None => ex
                .status
                .message
                .clone()
                .or_else(|| ex.status.reset.clone()),
            Some(d) if d.input.is_none() || d.category == "malformed_tensor" => {
                Some(d.summary.clone())
            }
            Some(_) => None,
        };
        // A model or version that does not exist is one cause whatever the
        // method or signature of the calls that hit it.
        let signature_key = match category.as_str() {
            "model_not_found" | "version_not_found" => None,
            _ => ex.signature.as_ref(),
        };
        let key = serde_json::to_string(&(
            &category,
            &ex.model,
            signature_key,
            &input,
            &sent,
            &expected,
            &message_key,
        ))
        .unwrap_or_default();
        let idx = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                let summary = d.map(|d| d.summary.clone()).unwrap_or_else(|| {
                    message_key.clone().unwrap_or_else(|| {
                        format!(
                            "{status_line} failure",
                            status_line = ex.status.grpc_status.unwrap_or("unknown")
                        )
                    })
                });
                self.root_causes.push(RootCause {
                    category,
                    model: ex.model.clone(),
                    signature: signature_key.cloned(),
                    input,
                    sent,
                    expected,
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
                self.index.insert(key, self.root_causes.len() - 1);
                self.root_causes.len() - 1
            }
        };
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
        let client = client_host(&ex.client);
        if !rc.clients.contains(&client) && rc.clients.len() < MAX_CLIENTS {
            rc.clients.push(client);
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

fn client_host(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => addr.to_string(),
    }
}
