//! The analysis pipeline: packets in, exchanges out. Owns the flow table and,
//! per connection, the protocol decoder chosen for it from the first bytes
//! (HTTP/2 preface, an HTTP/1 request line, a TLS handshake).

use std::collections::HashMap;

use foldhash::fast::RandomState;

use serde::Serialize;

use crate::capture::Packet;
use crate::grpc::{self, Call, CallTable};
use crate::http1;
use crate::http2;
use crate::net::{
    ConnInfo, Delivery, Dir, FlowLimits, FlowSink, FlowTable, NetStats, Skip, TcpSegment,
};
use crate::tfserving::exchange::{rfc3339, Status};
use crate::tfserving::{Exchange, Transport};

/// Everything the pipeline can be tuned with.
#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_ports: Vec<u16>,
    pub rest_ports: Vec<u16>,
    pub flow: FlowLimits,
    pub http2: http2::Limits,
    pub http1: http1::Limits,
    pub grpc: grpc::Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc_ports: vec![8500],
            rest_ports: vec![8501],
            flow: FlowLimits::default(),
            http2: http2::Limits::default(),
            http1: http1::Limits::default(),
            grpc: grpc::Limits::default(),
        }
    }
}

/// Receives exchanges as they complete.
pub trait ExchangeSink {
    /// Returns false to stop the analysis (e.g. the output pipe closed).
    /// Boxed: an exchange is about a kilobyte, and it passes through
    /// several queues on its way out.
    fn exchange(&mut self, ex: Box<Exchange>) -> bool;

    /// A connection got its index (before any of its exchanges).
    fn connection_opened(&mut self, _conn: u64) {}

    /// A connection ended (after all of its exchanges).
    fn connection_closed(&mut self, _conn: u64) {}
}

impl<F: FnMut(Exchange) -> bool> ExchangeSink for F {
    fn exchange(&mut self, ex: Box<Exchange>) -> bool {
        self(*ex)
    }
}

/// Protocol statistics over all connections.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ProtoStats {
    pub http2_connections: u64,
    pub http1_connections: u64,
    pub tls_connections: u64,
    pub other_connections: u64,
    /// Connections picked up after their start, not decodable yet.
    pub undecided_connections: u64,
    pub http2: http2::Stats,
    pub http1: http1::Stats,
    pub grpc_calls: u64,
    pub rest_exchanges: u64,
    pub untracked_streams: u64,
    pub streams_with_unknown_headers: u64,
    pub incomplete_exchanges: u64,
    pub protocol_mismatches: u64,
    /// HTTP/2 connections decoded from a point after their start.
    pub mid_connection_pickups: u64,
    /// gRPC messages not decoded because of --max-message-bytes (on the
    /// wire or decompressed).
    pub messages_over_limit: u64,
}

// One per connection, and nearly every connection is the large variant
// (HTTP/2 with its call table): boxing it would only add an indirection per
// frame.
#[allow(clippy::large_enum_variant)]
enum Proto {
    /// Waiting for the first client bytes. Servers may speak first (HTTP/2
    /// servers send SETTINGS on accept), so their early bytes are held.
    Undecided {
        seen: Vec<u8>,
        server_early: Vec<(Vec<u8>, u64, i64)>,
        server_early_bytes: usize,
        /// Where the checks of `seen` for a mid-connection pickup got to.
        scan: MidScan,
    },
    Http2 {
        conn: Box<http2::Connection>,
        calls: CallTable,
        server_checked: bool,
    },
    Http1 {
        conn: Box<http1::Connection>,
        server_checked: bool,
    },
    /// Not traffic tfwire decodes (counted, bytes dropped).
    Other,
}

/// Server bytes held while waiting for the client's first bytes.
const EARLY_SERVER_BYTES: usize = 64 << 10;
/// Client bytes examined before giving up on recognising a connection
/// picked up mid-way.
const UNDECIDED_CLIENT_BYTES: usize = 64 << 10;

/// The decoder a connection gets.
enum Choice {
    Http2 { from_start: bool },
    Http1,
    Tls,
    Other,
}

/// How far `guess_mid` has looked into bytes that grow between calls, so
/// each delivery costs its own bytes rather than all of them again.
#[derive(Default)]
struct MidScan {
    frames: http2::ChainScan,
    /// Windows starting below this were searched for "HTTP/1".
    http1_from: usize,
}

impl MidScan {
    /// `bytes.windows(6).any(|w| w == b"HTTP/1")`, over the new windows only.
    fn http1_inside(&mut self, bytes: &[u8]) -> bool {
        let from = self.http1_from.min(bytes.len());
        self.http1_from = self.http1_from.max(bytes.len().saturating_sub(5));
        bytes[from..].windows(6).any(|w| w == b"HTTP/1")
    }
}

/// A connection picked up after its start: HTTP/2 frames somewhere in the
/// bytes, an HTTP/1 message, or (on a known port) the port's protocol.
/// `scan` carries what earlier calls checked: `bytes` must extend their bytes.
fn guess_mid(
    bytes: &[u8],
    dir: Dir,
    port: Option<Transport>,
    give_up: bool,
    scan: &mut MidScan,
) -> Option<Choice> {
    if scan.frames.find(bytes, dir).is_some() {
        return Some(Choice::Http2 { from_start: false });
    }
    let http1_start = match dir {
        Dir::ToServer => http1::looks_like_request(bytes),
        Dir::ToClient => http1::looks_like_response(bytes),
    };
    if http1_start || (port == Some(Transport::Rest) && scan.http1_inside(bytes)) {
        return Some(Choice::Http1);
    }
    if !give_up && bytes.len() < UNDECIDED_CLIENT_BYTES {
        return None;
    }
    Some(match port {
        Some(Transport::Grpc) => Choice::Http2 { from_start: false },
        Some(Transport::Rest) => Choice::Http1,
        None => Choice::Other,
    })
}

struct Conn {
    info: ConnInfo,
    proto: Proto,
    first_frame: u64,
    first_ts: i64,
    /// Bytes the server sent, and whether it closed before the client did:
    /// a server that hangs up without a word is a clue (a TLS-only port).
    server_bytes: u64,
    client_ended: bool,
    server_closed_first: bool,
}

/// Where exchanges go, with the counters that follow them.
struct Out<S> {
    next: u64,
    sink: S,
    stopped: bool,
    stats: ProtoStats,
}

impl<S: ExchangeSink> Out<S> {
    fn emit(&mut self, ex: Box<Exchange>) {
        if self.stopped {
            return;
        }
        if !ex.complete {
            self.stats.incomplete_exchanges += 1;
        }
        self.next += 1;
        if !self.sink.exchange(ex) {
            self.stopped = true;
        }
    }

    fn call(&mut self, info: &ConnInfo, call: Box<Call>, problem: Option<(&str, bool)>) {
        if self.stopped {
            return;
        }
        let unknown = [
            &call.request_headers,
            &call.response_headers,
            &call.trailers,
        ]
        .iter()
        .any(|h| {
            h.as_ref()
                .is_some_and(|h| h.unknown_fields > 0 || !h.unknown_values.is_empty())
        });
        if unknown {
            self.stats.streams_with_unknown_headers += 1;
        }
        self.stats.grpc_calls += 1;
        self.stats.messages_over_limit += call
            .request
            .messages
            .iter()
            .chain(&call.response.messages)
            .filter(|m| m.problem.as_deref().is_some_and(|p| p.contains("limit")))
            .count() as u64;
        let mut ex = Exchange::from_grpc(self.next, info, call);
        if let Some((p, certain)) = problem {
            self.stats.protocol_mismatches += 1;
            ex.set_protocol_problem(p.to_string(), certain);
        } else if let Some(ct) = ex
            .notes
            .iter()
            .find(|n| n.starts_with("request content-type is"))
            .cloned()
        {
            self.stats.protocol_mismatches += 1;
            ex.set_protocol_problem(format!("{ct}: a gRPC server needs protobuf messages"), true);
        }
        self.emit(ex);
    }

    fn rest(&mut self, info: &ConnInfo, ev: http1::Event, problem: Option<(&str, bool)>) {
        if self.stopped {
            return;
        }
        let http1::Event::Exchange { request, response } = ev;
        self.stats.rest_exchanges += 1;
        let mut ex = Box::new(Exchange::from_rest(
            self.next,
            info,
            request.as_deref(),
            response.as_deref(),
        ));
        let grpc_web = request
            .as_ref()
            .and_then(|r| r.header("content-type"))
            .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/grpc"));
        if let Some((p, certain)) = problem {
            self.stats.protocol_mismatches += 1;
            ex.set_protocol_problem(p.to_string(), certain);
        } else if grpc_web {
            self.stats.protocol_mismatches += 1;
            ex.set_protocol_problem(
                "gRPC-Web (or gRPC over HTTP/1.1) request: TF Serving speaks gRPC over HTTP/2 only; a gRPC-Web proxy (e.g. Envoy) must translate".to_string(),
                true,
            );
        }
        self.emit(ex);
    }

    /// A connection that never carried a decodable exchange (TLS to a
    /// plaintext port, plaintext to TLS), reported as one failed exchange.
    fn mismatch(
        &mut self,
        info: &ConnInfo,
        first_frame: u64,
        first_ts: i64,
        transport: Transport,
        problem: String,
        certain: bool,
    ) {
        if self.stopped {
            return;
        }
        self.stats.protocol_mismatches += 1;
        let mut ex = Exchange {
            kind: "exchange",
            id: self.next,
            transport,
            client: info.client_text.clone(),
            server: info.server_text.clone(),
            connection: info.id,
            stream: None,
            request_frames: vec![first_frame],
            response_frames: Vec::new(),
            request_id: None,
            method: None,
            path: None,
            model: None,
            version: None,
            version_label: None,
            signature: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            output_filter: Vec::new(),
            examples: None,
            tasks: Vec::new(),
            results: None,
            signatures: None,
            model_status: None,
            request_encoding: None,
            rest_format: None,
            http_method: None,
            request_bytes: 0,
            response_bytes: 0,
            start: Some(rfc3339(first_ts)),
            latency_ms: None,
            status: Status {
                ok: false,
                reset: Some("no exchange: the two sides speak different protocols".into()),
                ..Status::default()
            },
            complete: true,
            notes: Vec::new(),
            diagnosis: None,
            warnings: Vec::new(),
            wireshark_filter: format!("tcp.stream eq {}", info.id),
            start_ts_ns: Some(first_ts),
            resolved_version: None,
            metadata_fields: Vec::new(),
            protocol_problem: None,
            protocol_problem_certain: false,
        };
        ex.set_protocol_problem(problem, certain);
        self.emit(Box::new(ex));
    }
}

struct State<S> {
    config: Config,
    /// Keyed by connection index; foldhash with a per-process seed (the
    /// indices are ours, but a fast hash matters on every delivery).
    conns: HashMap<u64, Conn, RandomState>,
    out: Out<S>,
}

/// Turns packets into exchanges.
pub struct Analyzer<S: ExchangeSink> {
    flows: FlowTable,
    state: State<S>,
}

impl<S: ExchangeSink> Analyzer<S> {
    pub fn new(config: Config, sink: S) -> Self {
        let mut ports = config.grpc_ports.clone();
        ports.extend(&config.rest_ports);
        Analyzer {
            flows: FlowTable::new(ports, config.flow),
            state: State {
                config,
                conns: HashMap::default(),
                out: Out {
                    next: 1,
                    sink,
                    stopped: false,
                    stats: ProtoStats::default(),
                },
            },
        }
    }

    pub fn packet(&mut self, p: &Packet<'_>) {
        if !self.state.out.stopped {
            self.flows.packet(p, &mut self.state);
        }
    }

    /// One TCP segment already sliced from its packet (sharded analysis,
    /// where the caller parses to choose the shard).
    pub fn segment(&mut self, seg: &TcpSegment<'_>, frame: u64, ts_ns: i64) {
        if !self.state.out.stopped {
            self.flows.segment(seg, frame, ts_ns, &mut self.state);
        }
    }

    /// Counts a packet that carries no TCP segment to analyse.
    pub fn skipped(&mut self, skip: Skip) {
        self.flows.skipped(skip);
    }

    /// True once the exchange sink asked to stop.
    pub fn stopped(&self) -> bool {
        self.state.out.stopped
    }

    /// Closes every connection still open (end of input).
    pub fn finish(&mut self) {
        self.flows.finish(&mut self.state);
    }

    /// Closes connections idle since `cutoff_ns` (live capture).
    pub fn expire_idle(&mut self, cutoff_ns: i64) -> usize {
        self.flows.expire_idle(cutoff_ns, &mut self.state)
    }

    /// Reports gRPC calls idle since `cutoff_ns` on connections that are
    /// still busy with other calls (live capture).
    pub fn expire_calls(&mut self, cutoff_ns: i64) -> usize {
        let State { conns, out, .. } = &mut self.state;
        let mut n = 0;
        let mut ids: Vec<u64> = conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(Conn {
                info,
                proto: Proto::Http2 { calls, .. },
                ..
            }) = conns.get_mut(&id)
            {
                n += calls.expire(cutoff_ns, &mut |call| out.call(info, call, None));
            }
        }
        n
    }

    pub fn net_stats(&self) -> NetStats {
        self.flows.stats()
    }

    pub fn proto_stats(&self) -> ProtoStats {
        let mut s = self.state.out.stats.clone();
        for c in self.state.conns.values() {
            match &c.proto {
                Proto::Http2 { conn, calls, .. } => {
                    add_h2(&mut s.http2, &conn.stats());
                    s.untracked_streams += calls.untracked_streams;
                }
                Proto::Http1 { conn, .. } => add_h1(&mut s.http1, &conn.stats),
                _ => {}
            }
        }
        s
    }

    pub fn sink(&mut self) -> &mut S {
        &mut self.state.out.sink
    }

    pub fn into_sink(self) -> S {
        self.state.out.sink
    }
}

impl ProtoStats {
    /// Adds another shard's counts.
    pub fn add(&mut self, b: &ProtoStats) {
        // Destructured so that a new counter cannot be forgotten here.
        let ProtoStats {
            http2_connections,
            http1_connections,
            tls_connections,
            other_connections,
            undecided_connections,
            grpc_calls,
            rest_exchanges,
            untracked_streams,
            streams_with_unknown_headers,
            incomplete_exchanges,
            protocol_mismatches,
            mid_connection_pickups,
            messages_over_limit,
            http2,
            http1,
        } = b;
        self.http2_connections += http2_connections;
        self.http1_connections += http1_connections;
        self.tls_connections += tls_connections;
        self.other_connections += other_connections;
        self.undecided_connections += undecided_connections;
        self.grpc_calls += grpc_calls;
        self.rest_exchanges += rest_exchanges;
        self.untracked_streams += untracked_streams;
        self.streams_with_unknown_headers += streams_with_unknown_headers;
        self.incomplete_exchanges += incomplete_exchanges;
        self.protocol_mismatches += protocol_mismatches;
        self.mid_connection_pickups += mid_connection_pickups;
        self.messages_over_limit += messages_over_limit;
        add_h2(&mut self.http2, http2);
        add_h1(&mut self.http1, http1);
    }
}

fn add_h2(a: &mut http2::Stats, b: &http2::Stats) {
    a.frames += b.frames;
    a.data_frames += b.data_frames;
    a.header_blocks += b.header_blocks;
    a.frame_errors += b.frame_errors;
    a.hpack_errors += b.hpack_errors;
    a.unknown_header_refs += b.unknown_header_refs;
    a.oversized_frames += b.oversized_frames;
    a.desyncs += b.desyncs;
    a.bytes_unsynced += b.bytes_unsynced;
    a.resyncs += b.resyncs;
}

fn add_h1(a: &mut http1::Stats, b: &http1::Stats) {
    a.requests += b.requests;
    a.responses += b.responses;
    a.interim_responses += b.interim_responses;
    a.parse_errors += b.parse_errors;
    a.bodies_over_limit += b.bodies_over_limit;
    a.resyncs += b.resyncs;
}

/// A TLS record header: handshake (0x16) or alert (0x15), version 3.x.
fn looks_like_tls(b: &[u8]) -> bool {
    b.len() >= 3 && (b[0] == 0x16 || b[0] == 0x15) && b[1] == 3 && b[2] <= 4
}

impl<S: ExchangeSink> State<S> {
    fn port_kind(&self, info: &ConnInfo) -> Option<Transport> {
        let p = info.server.port();
        if self.config.grpc_ports.contains(&p) {
            Some(Transport::Grpc)
        } else if self.config.rest_ports.contains(&p) {
            Some(Transport::Rest)
        } else {
            None
        }
    }

    fn route(&mut self, conn_id: u64, dir: Dir, delivery: Delivery<'_>) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        match (&delivery, dir) {
            (Delivery::Data { bytes, .. }, Dir::ToClient) => {
                conn.server_bytes += bytes.len() as u64
            }
            (Delivery::End { .. }, Dir::ToServer) => conn.client_ended = true,
            (Delivery::End { .. }, Dir::ToClient) if !conn.client_ended => {
                conn.server_closed_first = true
            }
            _ => {}
        }
        if let Proto::Undecided { .. } = conn.proto {
            self.decide(conn_id, dir, delivery);
            return;
        }
        match delivery {
            Delivery::Data {
                bytes,
                frame,
                ts_ns,
                ..
            } => self.feed(conn_id, dir, bytes, frame, ts_ns),
            Delivery::Gap { len, .. } => {
                let State { conns, out, .. } = self;
                let Some(Conn { info, proto, .. }) = conns.get_mut(&conn_id) else {
                    return;
                };
                match proto {
                    Proto::Http2 { conn, calls, .. } => conn.gap(dir, len, &mut |ev| {
                        calls.event(ev, &mut |call| out.call(info, call, None))
                    }),
                    Proto::Http1 { conn, .. } => {
                        conn.gap(dir, len, &mut |ev| out.rest(info, ev, None))
                    }
                    _ => {}
                }
            }
            Delivery::End { .. } => {
                let State { conns, out, .. } = self;
                if let Some(Conn {
                    info,
                    proto: Proto::Http1 { conn, .. },
                    ..
                }) = conns.get_mut(&conn_id)
                {
                    conn.end(dir, &mut |ev| out.rest(info, ev, None));
                }
            }
        }
    }

    /// Chooses the decoder from the first bytes of the connection.
    fn decide(&mut self, conn_id: u64, dir: Dir, delivery: Delivery<'_>) {
        let State { conns, out, config } = self;
        let Some(conn) = conns.get_mut(&conn_id) else {
            return;
        };
        let Proto::Undecided {
            seen,
            server_early,
            server_early_bytes,
            scan,
        } = &mut conn.proto
        else {
            return;
        };
        let port_kind = {
            let p = conn.info.server.port();
            if config.grpc_ports.contains(&p) {
                Some(Transport::Grpc)
            } else if config.rest_ports.contains(&p) {
                Some(Transport::Rest)
            } else {
                None
            }
        };
        let preface = http2::frame::PREFACE;
        let mut taken_now = 0;
        let choice = match (&delivery, dir) {
            (
                Delivery::Data {
                    bytes,
                    frame,
                    ts_ns,
                    ..
                },
                Dir::ToServer,
            ) => {
                if seen.is_empty() {
                    conn.first_frame = *frame;
                    conn.first_ts = *ts_ns;
                }
                let room = UNDECIDED_CLIENT_BYTES.saturating_sub(seen.len());
                taken_now = bytes.len().min(room);
                seen.extend_from_slice(&bytes[..taken_now]);
                let overflow = bytes.len() > room;
                if seen.len() < preface.len() && preface.starts_with(seen) {
                    None
                } else if seen.starts_with(preface) {
                    Some(Choice::Http2 { from_start: true })
                } else if http1::looks_like_request(seen) {
                    Some(Choice::Http1)
                } else if looks_like_tls(seen) {
                    Some(Choice::Tls)
                } else {
                    // Picked up mid-connection: frames, or bytes of a body.
                    guess_mid(seen, Dir::ToServer, port_kind, overflow, scan)
                }
            }
            (
                Delivery::Data {
                    bytes,
                    frame,
                    ts_ns,
                    ..
                },
                Dir::ToClient,
            ) => {
                *server_early_bytes += bytes.len();
                if *server_early_bytes <= EARLY_SERVER_BYTES {
                    server_early.push((bytes.to_vec(), *frame, *ts_ns));
                    None
                } else {
                    // The server keeps talking while the client is silent:
                    // picked up after the connection's start.
                    let all: Vec<u8> = server_early
                        .iter()
                        .flat_map(|(b, _, _)| b.iter().copied())
                        .collect();
                    guess_mid(
                        &all,
                        Dir::ToClient,
                        port_kind,
                        true,
                        &mut MidScan::default(),
                    )
                }
            }
            (Delivery::Gap { .. }, _) => Some(match port_kind {
                Some(Transport::Grpc) => Choice::Http2 { from_start: false },
                Some(Transport::Rest) => Choice::Http1,
                None => Choice::Other,
            }),
            (Delivery::End { .. }, _) => None,
        };
        let Some(choice) = choice else {
            return;
        };
        let head = std::mem::take(seen);
        let early = std::mem::take(server_early);
        let (first_frame, first_ts) = (conn.first_frame, conn.first_ts);
        let info = conn.info.clone();
        // The bytes of this delivery not yet in `head` (beyond the window).
        let (rest, frame, ts_ns): (&[u8], u64, i64) = match (&delivery, dir) {
            (
                Delivery::Data {
                    bytes,
                    frame,
                    ts_ns,
                    ..
                },
                Dir::ToServer,
            ) => (&bytes[taken_now..], *frame, *ts_ns),
            (Delivery::Data { frame, ts_ns, .. }, Dir::ToClient) => (&[], *frame, *ts_ns),
            _ => (&[], first_frame, first_ts),
        };
        match choice {
            Choice::Http2 { from_start } => {
                out.stats.http2_connections += 1;
                conn.proto = Proto::Http2 {
                    conn: Box::new(if from_start {
                        http2::Connection::new(config.http2)
                    } else {
                        http2::Connection::new_mid_connection(config.http2)
                    }),
                    calls: CallTable::new(conn_id, config.grpc),
                    server_checked: !from_start,
                };
                if !from_start {
                    out.stats.mid_connection_pickups += 1;
                }
            }
            Choice::Http1 => {
                out.stats.http1_connections += 1;
                conn.proto = Proto::Http1 {
                    conn: Box::new(http1::Connection::new(config.http1)),
                    server_checked: false,
                };
            }
            Choice::Tls => {
                out.stats.tls_connections += 1;
                conn.proto = Proto::Other;
                if let Some(kind) = port_kind {
                    let what = match kind {
                        Transport::Grpc => "gRPC",
                        Transport::Rest => "REST",
                    };
                    out.mismatch(
                        &info,
                        first_frame,
                        first_ts,
                        kind,
                        format!(
                            "the client started a TLS handshake (ClientHello) on port {}, where TF Serving's {what} API speaks plaintext: use {} (or configure the server with --ssl_config_file)",
                            info.server.port(),
                            match kind {
                                Transport::Grpc => "grpc.insecure_channel(...) / plaintext",
                                Transport::Rest => "http:// instead of https://",
                            }
                        ),
                        true,
                    );
                }
                return;
            }
            Choice::Other => {
                out.stats.other_connections += 1;
                conn.proto = Proto::Other;
                return;
            }
        }
        // Replay what was held, in the order it arrived per direction.
        if !head.is_empty() {
            self.feed(conn_id, Dir::ToServer, &head, first_frame, first_ts);
        }
        if !rest.is_empty() {
            self.feed(conn_id, Dir::ToServer, rest, frame, ts_ns);
        }
        for (b, f, t) in early {
            self.feed(conn_id, Dir::ToClient, &b, f, t);
        }
        if let Delivery::Gap { len, .. } = delivery {
            self.route(conn_id, dir, Delivery::Gap { offset: 0, len });
        }
    }

    fn feed(&mut self, conn_id: u64, dir: Dir, bytes: &[u8], frame: u64, ts_ns: i64) {
        let kind = self
            .conns
            .get(&conn_id)
            .and_then(|c| self.port_kind(&c.info));
        let State { conns, out, .. } = self;
        let Some(Conn {
            info,
            proto,
            first_frame,
            first_ts,
            ..
        }) = conns.get_mut(&conn_id)
        else {
            return;
        };
        match proto {
            Proto::Http2 {
                conn,
                calls,
                server_checked,
            } => {
                if dir == Dir::ToClient && !*server_checked {
                    *server_checked = true;
                    if let Some(p) = server_mismatch(bytes, kind, "HTTP/2 (gRPC)") {
                        let (f, t) = (*first_frame, *first_ts);
                        let info = info.clone();
                        *proto = Proto::Other;
                        out.mismatch(&info, f, t, Transport::Grpc, p, true);
                        return;
                    }
                }
                // gRPC sent to the REST port: say so on every call.
                let problem = (kind == Some(Transport::Rest))
                    .then(|| wrong_port(Transport::Grpc, info.server.port()));
                conn.data(dir, bytes, frame, ts_ns, &mut |ev| {
                    calls.event(ev, &mut |call| {
                        out.call(info, call, problem.as_deref().map(|p| (p, true)))
                    })
                });
            }
            Proto::Http1 {
                conn,
                server_checked,
            } => {
                if dir == Dir::ToClient && !*server_checked {
                    *server_checked = true;
                    if let Some(p) = server_mismatch(bytes, kind, "HTTP/1.1") {
                        let (f, t) = (*first_frame, *first_ts);
                        let info = info.clone();
                        *proto = Proto::Other;
                        out.mismatch(&info, f, t, Transport::Rest, p, true);
                        return;
                    }
                }
                let problem = (kind == Some(Transport::Grpc))
                    .then(|| wrong_port(Transport::Rest, info.server.port()));
                conn.data(dir, bytes, frame, ts_ns, &mut |ev| {
                    out.rest(info, ev, problem.as_deref().map(|p| (p, true)))
                });
            }
            Proto::Undecided { .. } | Proto::Other => {}
        }
    }
}

/// A client that speaks `sent` to the port of the other API.
fn wrong_port(sent: Transport, port: u16) -> String {
    match sent {
        Transport::Grpc => format!(
            "HTTP/2 (gRPC) sent to port {port}, TF Serving's REST port (HTTP/1.1 + JSON); gRPC goes to the gRPC port (default 8500)"
        ),
        Transport::Rest => format!(
            "HTTP/1.1 request sent to port {port}, TF Serving's gRPC port (HTTP/2); REST requests go to the REST port (default 8501, --rest_api_port)"
        ),
    }
}

/// The server's first bytes show it speaks something else: TLS to our
/// plaintext client, or HTTP/1 to an HTTP/2 client and vice versa.
fn server_mismatch(bytes: &[u8], kind: Option<Transport>, client_speaks: &str) -> Option<String> {
    let _ = kind;
    if looks_like_tls(bytes) {
        return Some(format!(
            "the client sent plaintext {client_speaks} but the server answered with TLS: this port expects TLS (use a secure channel / https://)"
        ));
    }
    if client_speaks.starts_with("HTTP/2") && http1::looks_like_response(bytes) {
        let line = String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        return Some(format!(
            "the client spoke HTTP/2 (gRPC) but the server answered with HTTP/1.x ({line}): this is an HTTP/1.1 port, e.g. TF Serving's REST API"
        ));
    }
    None
}

impl<S: ExchangeSink> FlowSink for State<S> {
    fn opened(&mut self, info: &ConnInfo) {
        self.out.sink.connection_opened(info.id);
        self.conns.insert(
            info.id,
            Conn {
                info: info.clone(),
                proto: Proto::Undecided {
                    seen: Vec::new(),
                    server_early: Vec::new(),
                    server_early_bytes: 0,
                    scan: MidScan::default(),
                },
                first_frame: info.first_frame,
                first_ts: info.first_ts_ns,
                server_bytes: 0,
                client_ended: false,
                server_closed_first: false,
            },
        );
    }

    fn data(&mut self, conn: u64, dir: Dir, delivery: Delivery<'_>) {
        self.route(conn, dir, delivery);
    }

    fn closed(&mut self, conn_id: u64) {
        let Some(mut conn) = self.conns.remove(&conn_id) else {
            self.out.sink.connection_closed(conn_id);
            return;
        };
        let kind = self.port_kind(&conn.info);
        let out = &mut self.out;
        let info = &conn.info;
        // The server hung up without sending a byte: what a TLS-only port
        // does with plaintext (or a server refusing the client).
        let silent = (conn.server_bytes == 0 && conn.server_closed_first).then(|| {
            format!(
                "the server on port {} closed the connection without answering a single byte; a TLS-only port does this with plaintext: check whether it expects TLS (a secure channel / https://)",
                info.server.port()
            )
        });
        match &mut conn.proto {
            Proto::Http2 {
                conn: h2, calls, ..
            } => {
                add_h2(&mut out.stats.http2, &h2.stats());
                out.stats.untracked_streams += calls.untracked_streams;
                let problem = if kind == Some(Transport::Rest) {
                    Some((wrong_port(Transport::Grpc, info.server.port()), true))
                } else {
                    silent.clone().map(|s| (s, false))
                };
                if calls.calls_seen == 0 {
                    if let Some((p, certain)) = problem {
                        out.mismatch(
                            info,
                            conn.first_frame,
                            conn.first_ts,
                            Transport::Grpc,
                            p,
                            certain,
                        );
                    }
                } else {
                    calls.close(&mut |call| {
                        out.call(info, call, problem.as_ref().map(|(p, c)| (p.as_str(), *c)))
                    });
                }
            }
            Proto::Http1 { conn: h1, .. } => {
                let problem = if kind == Some(Transport::Grpc) {
                    Some((wrong_port(Transport::Rest, info.server.port()), true))
                } else {
                    silent.map(|s| (s, false))
                };
                h1.close(&mut |ev| {
                    out.rest(info, ev, problem.as_ref().map(|(p, c)| (p.as_str(), *c)))
                });
                add_h1(&mut out.stats.http1, &h1.stats);
            }
            Proto::Undecided { seen, .. } if !seen.is_empty() => {
                out.stats.other_connections += 1;
            }
            _ => {}
        }
        out.sink.connection_closed(conn_id);
    }
}

/// Every exchange of a committed fixture, straight from the pipeline, for
/// unit tests.
#[cfg(test)]
pub(crate) fn fixture_exchanges(name: &str) -> Vec<Exchange> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let mut out = Vec::new();
    let mut analyzer = Analyzer::new(Config::default(), |ex: Exchange| {
        out.push(ex);
        true
    });
    let Ok(mut r) = crate::capture::CaptureReader::open(&path) else {
        panic!("fixture {} opens", path.display());
    };
    r.for_each_packet(1, |p, _| analyzer.packet(p));
    analyzer.finish();
    drop(analyzer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `guess_mid` as it was before `MidScan`: every check over all the
    /// bytes, frame chains looked for at every start (no cap on waiting ones).
    fn guess_mid_rescan(
        bytes: &[u8],
        dir: Dir,
        port: Option<Transport>,
        give_up: bool,
    ) -> Option<Choice> {
        if http2::looks_like_frames(bytes, dir) {
            return Some(Choice::Http2 { from_start: false });
        }
        let http1_start = match dir {
            Dir::ToServer => http1::looks_like_request(bytes),
            Dir::ToClient => http1::looks_like_response(bytes),
        };
        if http1_start
            || (port == Some(Transport::Rest) && bytes.windows(6).any(|w| w == b"HTTP/1"))
        {
            return Some(Choice::Http1);
        }
        if !give_up && bytes.len() < UNDECIDED_CLIENT_BYTES {
            return None;
        }
        Some(match port {
            Some(Transport::Grpc) => Choice::Http2 { from_start: false },
            Some(Transport::Rest) => Choice::Http1,
            None => Choice::Other,
        })
    }

    fn name(c: &Option<Choice>) -> &'static str {
        match c {
            None => "undecided",
            Some(Choice::Http2 { from_start: true }) => "http2 start",
            Some(Choice::Http2 { from_start: false }) => "http2 mid",
            Some(Choice::Http1) => "http1",
            Some(Choice::Tls) => "tls",
            Some(Choice::Other) => "other",
        }
    }

    /// Bytes with frame headers among junk: plausible frames of every kind
    /// the chain accepts (some announcing more than follows), broken
    /// headers, "HTTP/1" cut anywhere, and runs of one byte.
    fn stream(next: &mut impl FnMut(u64) -> u64) -> Vec<u8> {
        let mut b = Vec::new();
        let target = 1 + next(3000) as usize;
        while b.len() < target {
            match next(6) {
                0..=2 => {
                    let (kind, flags, stream, len) = match next(6) {
                        0 => (
                            0u8,
                            [0u8, 1, 8][next(3) as usize],
                            1 + 2 * next(4) as u32,
                            next(40),
                        ),
                        1 => (1, 4, 1 + 2 * next(4) as u32, next(30)),
                        2 => (4, 0, 0, 6 * next(3)),
                        3 => (6, 0, 0, 8),
                        4 => (8, 0, 0, 4),
                        _ => (next(12) as u8, next(3) as u8, next(4) as u32, next(20)),
                    };
                    b.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
                    b.push(kind);
                    b.push(flags);
                    b.extend_from_slice(&stream.to_be_bytes());
                    // Usually the payload announced, sometimes less or more.
                    let body = match next(4) {
                        0 => next(50),
                        _ => len,
                    };
                    b.extend((0..body).map(|_| [0u8, 1, 4, 0xff][next(4) as usize]));
                }
                3 => b.extend_from_slice(&b"HTTP/1.1 "[..next(10) as usize]),
                4 => b.extend(std::iter::repeat_n(
                    [0u8, 0xff][next(2) as usize],
                    next(30) as usize,
                )),
                _ => b.extend((0..next(12)).map(|_| next(256) as u8)),
            }
        }
        b
    }

    /// Growing bytes delivered in pieces of random sizes: the incremental
    /// checks decide what the full rescan decides, at the same delivery.
    /// Whatever the bytes, a chain the frame scan finds is one the rescan
    /// finds; the same answers are owed to the bytes: exact while fewer
    /// starts wait than the scan keeps, and here also in the rounds that
    /// fill it, as those it drops (waiting longest) decide nothing.
    #[test]
    fn incremental_mid_guess_decides_as_the_full_rescan() {
        let mut next = crate::test_rng(0x2545_f491_4f6c_dd1du64);
        let mut decided = [0usize; 2];
        let mut filled = 0;
        for round in 0..3000 {
            let bytes = stream(&mut next);
            let dir = if round % 3 == 0 {
                Dir::ToClient
            } else {
                Dir::ToServer
            };
            let port = [None, Some(Transport::Grpc), Some(Transport::Rest)][next(3) as usize];
            let mut frames = http2::ChainScan::default();
            let mut scan = MidScan::default();
            let mut len = 0;
            let (mut mid_done, mut full) = (false, false);
            while len < bytes.len() {
                let step = if next(2) == 0 { 3 } else { 200 };
                len = (len + 1 + next(step) as usize).min(bytes.len());
                let seen = &bytes[..len];
                // The frame scan keeps answering as the rescan would, even
                // asked again after a chain was found.
                let found = frames.find(seen, dir);
                if let Some(s) = found {
                    assert!(
                        http2::chain_found_at(seen, s, dir),
                        "round {round} at {len}"
                    );
                }
                assert!(frames.waiting() <= http2::MAX_WAITING);
                full |= frames.waiting() == http2::MAX_WAITING;
                assert_eq!(
                    found.is_some(),
                    http2::looks_like_frames(seen, dir),
                    "round {round} at {len}"
                );
                if !mid_done {
                    let give_up = next(50) == 0;
                    let want = guess_mid_rescan(seen, dir, port, give_up);
                    let got = guess_mid(seen, dir, port, give_up, &mut scan);
                    assert_eq!(name(&got), name(&want), "round {round} at {len}");
                    if want.is_some() {
                        mid_done = true;
                        decided[usize::from(matches!(want, Some(Choice::Http2 { .. })))] += 1;
                    }
                }
            }
            filled += usize::from(full);
        }
        // Both outcomes are exercised.
        assert!(decided[0] > 100 && decided[1] > 100, "{decided:?}");
        // Some rounds drop waiting starts.
        assert!(filled > 50, "{filled}");
    }

    fn header(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, len: usize) {
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
    }

    /// More plausible headers waiting at once than the frame scan keeps,
    /// then real frames: headers claiming up to 16 MiB, headers whose frame
    /// ends on the first real frame (a chain the rescan finds), and decoys
    /// whose frame ends a byte before it, waiting for fewer bytes than those
    /// (so kept instead of them) and failing there. The scan never holds
    /// more than its cap, never finds what the rescan does not, and finds
    /// the real frames before they end, though it may be later than the
    /// rescan. (Stream 0x7e7e7e7f and 4 bytes between the headers keep the
    /// offsets inside them from chaining up.)
    #[test]
    fn mid_guess_finds_frames_behind_more_waiting_headers_than_kept() {
        let mut next = crate::test_rng(0x9e37_79b9_7f4a_7c15);
        let mut later = 0;
        let mut filled = 0;
        for round in 0..300 {
            let junk = http2::MAX_WAITING + 1 + next(8 * http2::MAX_WAITING as u64) as usize;
            let real_at = junk * 13 + next(20) as usize;
            let mut b = Vec::new();
            let s = 0x7e7e_7e7f;
            for _ in 0..junk {
                let at = b.len();
                match next(4) {
                    0 => header(&mut b, 1, 4, s, 1 << 20),
                    1 => header(&mut b, 0, 0, s, (1 << 16) + next(0xff_0000) as usize),
                    // DATA ending on `real_at`, or one byte before it.
                    k => header(&mut b, 0, 1, s, real_at - (k as usize - 2) - at - 9),
                }
                b.extend_from_slice(&[0xee; 4]);
            }
            b.resize(real_at, 0xee);
            header(&mut b, 4, 0, 0, 0);
            header(&mut b, 6, 0, 0, 8);
            b.extend_from_slice(&[7; 8]);
            header(&mut b, 8, 0, 0, 4);
            b.extend_from_slice(&[0, 0, 1, 0]);
            header(&mut b, 1, 4, 1, 3);
            b.extend_from_slice(&[0x82, 0x86, 0x84]);
            header(&mut b, 0, 1, 1, 5);
            b.extend_from_slice(&[0, 0, 0, 0, 0]);
            header(&mut b, 8, 0, 0, 4);
            b.extend_from_slice(&[0, 0, 1, 0]);
            let dir = if round % 2 == 0 {
                Dir::ToServer
            } else {
                Dir::ToClient
            };
            let mut frames = http2::ChainScan::default();
            let mut scan = MidScan::default();
            let (mut len, mut found_at, mut rescan_at, mut full) = (0, None, None, false);
            while len < b.len() {
                // Small pieces over the real frames, to tell finds apart.
                let step = if len + 40 >= real_at || next(2) == 0 {
                    3
                } else {
                    40
                };
                len = (len + 1 + next(step) as usize).min(b.len());
                let seen = &b[..len];
                let found = frames.find(seen, dir);
                assert!(frames.waiting() <= http2::MAX_WAITING, "round {round}");
                full |= frames.waiting() == http2::MAX_WAITING;
                // Every chain ends past `real_at`: the rescan is spared before.
                let rescan =
                    (len > real_at || found.is_some()) && http2::looks_like_frames(seen, dir);
                if let Some(s) = found {
                    assert!(
                        http2::chain_found_at(seen, s, dir),
                        "round {round} at {len}"
                    );
                    assert!(rescan, "round {round} at {len}");
                    found_at.get_or_insert(len);
                }
                if rescan {
                    rescan_at.get_or_insert(len);
                }
                // The guess over the same bytes, once per delivery.
                let guess = guess_mid(seen, dir, None, false, &mut scan);
                if matches!(guess, Some(Choice::Http2 { .. })) {
                    assert!(rescan, "round {round} at {len}");
                    break;
                }
                assert!(guess.is_none(), "round {round}: {}", name(&guess));
            }
            let Some(found_at) = found_at else {
                panic!("round {round}: the real frames were not found");
            };
            // Only the real frames make chains here.
            assert!(found_at > real_at, "round {round}");
            assert!(rescan_at.is_some_and(|r| r <= found_at), "round {round}");
            later += usize::from(rescan_at != Some(found_at));
            filled += usize::from(full);
        }
        // The cap is reached, and sometimes costs a later find.
        assert!(filled > 250 && later > 50, "{filled} {later}");
    }
}
