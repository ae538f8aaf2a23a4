//! The analysis pipeline: packets in, exchanges out. Owns the flow table and,
//! per connection, the protocol decoder chosen for it.

use std::collections::HashMap;

use serde::Serialize;

use crate::capture::Packet;
use crate::grpc::{self, Call, CallTable};
use crate::http2;
use crate::net::{ConnInfo, Delivery, Dir, FlowLimits, FlowSink, FlowTable, NetStats};
use crate::tfserving::Exchange;

/// Everything the pipeline can be tuned with.
#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_ports: Vec<u16>,
    pub rest_ports: Vec<u16>,
    pub flow: FlowLimits,
    pub http2: http2::Limits,
    pub grpc: grpc::Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc_ports: vec![8500],
            rest_ports: vec![8501],
            flow: FlowLimits::default(),
            http2: http2::Limits::default(),
            grpc: grpc::Limits::default(),
        }
    }
}

/// Receives exchanges as they complete.
pub trait ExchangeSink {
    /// Returns false to stop the analysis (e.g. the output pipe closed).
    fn exchange(&mut self, ex: Exchange) -> bool;
}

impl<F: FnMut(Exchange) -> bool> ExchangeSink for F {
    fn exchange(&mut self, ex: Exchange) -> bool {
        self(ex)
    }
}

/// Protocol statistics over all connections.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ProtoStats {
    pub http2_connections: u64,
    pub other_connections: u64,
    /// Connections picked up after their start, not decodable yet.
    pub undecided_connections: u64,
    pub http2: http2::Stats,
    pub grpc_calls: u64,
    pub untracked_streams: u64,
    pub streams_with_unknown_headers: u64,
    pub incomplete_exchanges: u64,
}

enum Proto {
    /// Waiting for the first client bytes. Servers may speak first (HTTP/2
    /// servers send SETTINGS on accept), so their early bytes are held.
    Undecided {
        seen: Vec<u8>,
        server_early: Vec<(Vec<u8>, u64, i64)>,
        server_early_bytes: usize,
    },
    Http2 {
        conn: Box<http2::Connection>,
        calls: CallTable,
    },
    /// Not traffic tfwire decodes (counted, bytes dropped).
    Other,
}

/// Server bytes held while waiting for the client's first bytes.
const EARLY_SERVER_BYTES: usize = 64 << 10;

struct Conn {
    info: ConnInfo,
    proto: Proto,
}

struct State<S> {
    config: Config,
    conns: HashMap<u64, Conn>,
    next_exchange: u64,
    out: S,
    stopped: bool,
    stats: ProtoStats,
}

/// Turns packets into exchanges.
pub struct Analyzer<S: ExchangeSink> {
    flows: FlowTable,
    state: State<S>,
}

impl<S: ExchangeSink> Analyzer<S> {
    pub fn new(config: Config, out: S) -> Self {
        let mut ports = config.grpc_ports.clone();
        ports.extend(&config.rest_ports);
        Analyzer {
            flows: FlowTable::new(ports, config.flow),
            state: State {
                config,
                conns: HashMap::new(),
                next_exchange: 1,
                out,
                stopped: false,
                stats: ProtoStats::default(),
            },
        }
    }

    pub fn packet(&mut self, p: &Packet<'_>) {
        if !self.state.stopped {
            self.flows.packet(p, &mut self.state);
        }
    }

    /// True once the exchange sink asked to stop.
    pub fn stopped(&self) -> bool {
        self.state.stopped
    }

    /// Closes every connection still open (end of input).
    pub fn finish(&mut self) {
        self.flows.finish(&mut self.state);
    }

    /// Closes connections idle since `cutoff_ns` (live capture).
    pub fn expire_idle(&mut self, cutoff_ns: i64) -> usize {
        self.flows.expire_idle(cutoff_ns, &mut self.state)
    }

    pub fn net_stats(&self) -> NetStats {
        self.flows.stats()
    }

    pub fn proto_stats(&self) -> ProtoStats {
        let mut s = self.state.stats.clone();
        for c in self.state.conns.values() {
            if let Proto::Http2 { conn, calls } = &c.proto {
                add_h2(&mut s.http2, &conn.stats());
                s.untracked_streams += calls.untracked_streams;
            }
        }
        s
    }

    pub fn sink(&mut self) -> &mut S {
        &mut self.state.out
    }

    pub fn into_sink(self) -> S {
        self.state.out
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
}

impl<S: ExchangeSink> State<S> {
    fn emit_call(
        info: &ConnInfo,
        call: Call,
        next: &mut u64,
        out: &mut S,
        stopped: &mut bool,
        stats: &mut ProtoStats,
    ) {
        if *stopped {
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
            stats.streams_with_unknown_headers += 1;
        }
        stats.grpc_calls += 1;
        let ex = Exchange::from_grpc(*next, info, call);
        if !ex.complete {
            stats.incomplete_exchanges += 1;
        }
        *next += 1;
        if !out.exchange(ex) {
            *stopped = true;
        }
    }

    fn route(&mut self, conn_id: u64, dir: Dir, delivery: Delivery<'_>) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        if let Proto::Undecided {
            seen,
            server_early,
            server_early_bytes,
        } = &mut conn.proto
        {
            match (&delivery, dir) {
                (
                    Delivery::Data {
                        bytes,
                        frame,
                        ts_ns,
                        ..
                    },
                    Dir::ToServer,
                ) => {
                    let preface = http2::frame::PREFACE;
                    let take = bytes.len().min(preface.len() - seen.len());
                    seen.extend_from_slice(&bytes[..take]);
                    if !preface.starts_with(seen) {
                        self.stats.other_connections += 1;
                        conn.proto = Proto::Other;
                    } else if seen.len() == preface.len() {
                        self.stats.http2_connections += 1;
                        let early = std::mem::take(server_early);
                        conn.proto = Proto::Http2 {
                            conn: Box::new(http2::Connection::new(self.config.http2)),
                            calls: CallTable::new(conn_id, self.config.grpc),
                        };
                        let (frame, ts_ns) = (*frame, *ts_ns);
                        self.feed_h2(conn_id, dir, preface, frame, ts_ns);
                        if take < bytes.len() {
                            self.feed_h2(conn_id, dir, &bytes[take..], frame, ts_ns);
                        }
                        for (b, f, t) in early {
                            self.feed_h2(conn_id, Dir::ToClient, &b, f, t);
                        }
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
                    } else {
                        // The server keeps talking before the client said
                        // anything: picked up after the connection's start.
                        self.stats.undecided_connections += 1;
                        conn.proto = Proto::Other;
                    }
                }
                (Delivery::Gap { .. }, _) => {
                    self.stats.undecided_connections += 1;
                    conn.proto = Proto::Other;
                }
                (Delivery::End { .. }, _) => {}
            }
            return;
        }
        if matches!(conn.proto, Proto::Other) {
            return;
        }
        match delivery {
            Delivery::Data {
                bytes,
                frame,
                ts_ns,
                ..
            } => self.feed_h2(conn_id, dir, bytes, frame, ts_ns),
            Delivery::Gap { len, .. } => {
                let State {
                    conns,
                    next_exchange,
                    out,
                    stopped,
                    stats,
                    ..
                } = self;
                if let Some(Conn {
                    info,
                    proto: Proto::Http2 { conn, calls },
                }) = conns.get_mut(&conn_id)
                {
                    conn.gap(dir, len, &mut |ev| {
                        calls.event(ev, &mut |call| {
                            Self::emit_call(info, call, next_exchange, out, stopped, stats)
                        })
                    });
                }
            }
            Delivery::End { .. } => {}
        }
    }

    fn feed_h2(&mut self, conn_id: u64, dir: Dir, bytes: &[u8], frame: u64, ts_ns: i64) {
        let State {
            conns,
            next_exchange,
            out,
            stopped,
            stats,
            ..
        } = self;
        if let Some(Conn {
            info,
            proto: Proto::Http2 { conn, calls },
        }) = conns.get_mut(&conn_id)
        {
            conn.data(dir, bytes, frame, ts_ns, &mut |ev| {
                calls.event(ev, &mut |call| {
                    Self::emit_call(info, call, next_exchange, out, stopped, stats)
                })
            });
        }
    }
}

impl<S: ExchangeSink> FlowSink for State<S> {
    fn opened(&mut self, info: &ConnInfo) {
        self.conns.insert(
            info.id,
            Conn {
                info: info.clone(),
                proto: Proto::Undecided {
                    seen: Vec::new(),
                    server_early: Vec::new(),
                    server_early_bytes: 0,
                },
            },
        );
    }

    fn data(&mut self, conn: u64, dir: Dir, delivery: Delivery<'_>) {
        self.route(conn, dir, delivery);
    }

    fn closed(&mut self, conn_id: u64) {
        let Some(mut conn) = self.conns.remove(&conn_id) else {
            return;
        };
        if let Proto::Http2 { conn: h2, calls } = &mut conn.proto {
            add_h2(&mut self.stats.http2, &h2.stats());
            self.stats.untracked_streams += calls.untracked_streams;
            let info = &conn.info;
            let State {
                next_exchange,
                out,
                stopped,
                stats,
                ..
            } = self;
            calls
                .close(&mut |call| Self::emit_call(info, call, next_exchange, out, stopped, stats));
        }
    }
}
