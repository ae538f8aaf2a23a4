//! Network stage: packets → TCP connections → ordered byte streams per direction.
//!
//! Connections are numbered in order of first appearance, starting at 0, which
//! matches Wireshark's `tcp.stream` index for the same file, so every exchange
//! can point at a display filter.

pub mod packet;
pub mod reassembly;

use std::cmp::{Ordering, Reverse};
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, SocketAddrV4};

use foldhash::fast::RandomState;

use serde::Serialize;

use crate::capture::Packet;
pub use packet::{tcp_segment, Skip, TcpSegment};
pub use reassembly::{Delivery, Limits as ReassemblyLimits, Reassembler};

/// Direction of bytes within a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    ToServer,
    ToClient,
}

impl Dir {
    pub fn index(self) -> usize {
        match self {
            Dir::ToServer => 0,
            Dir::ToClient => 1,
        }
    }
}

/// How the client side of a connection was determined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleSource {
    /// The handshake was seen.
    Handshake,
    /// Picked up mid-connection; the server is the side on a known service port.
    ServicePort,
    /// Picked up mid-connection on unknown ports; the lower port is taken as the server.
    LowerPort,
}

#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Wireshark-compatible `tcp.stream` index.
    pub id: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// `client` and `server` as exchanges print them, written once per
    /// connection rather than twice per exchange.
    pub client_text: String,
    pub server_text: String,
    pub roles: RoleSource,
    pub first_frame: u64,
    pub first_ts_ns: i64,
}

/// Receives what the flow table reconstructs.
pub trait FlowSink {
    fn opened(&mut self, info: &ConnInfo);
    fn data(&mut self, conn: u64, dir: Dir, delivery: Delivery<'_>);
    /// The connection ended (both directions closed, reset, or end of input).
    fn closed(&mut self, conn: u64);
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct NetStats {
    pub tcp_segments: u64,
    pub non_tcp_packets: u64,
    pub ip_fragments: u64,
    pub malformed_packets: u64,
    pub unsupported_link_packets: u64,
    pub connections: u64,
    /// Segments cut by the capture's snaplen, and the payload bytes lost that way.
    pub snaplen_cut_segments: u64,
    pub snaplen_cut_bytes: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
    pub retransmitted_bytes: u64,
    pub overlap_conflicts: u64,
    pub out_of_order_segments: u64,
    /// Out-of-order buffer limit reached (a hole declared lost early).
    pub reassembly_limit_hits: u64,
    /// Connections closed early because --max-flows were open.
    pub flows_evicted: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct FlowLimits {
    pub reassembly: ReassemblyLimits,
    /// Open connections tracked at once; past this the least recently active is closed.
    pub max_flows: usize,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            reassembly: ReassemblyLimits {
                max_buffered_bytes: 8 << 20,
                max_segments: 8192,
            },
            max_flows: 65_536,
        }
    }
}

/// Endpoints in canonical order, so both directions find the same flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey(SocketAddr, SocketAddr);

/// An IPv4 endpoint as one integer, ordered as `SocketAddrV4` orders (address,
/// then port). Keying every packet through the generic `SocketAddr` hash and
/// comparison cost a tenth of the large-message profile.
fn packed(a: SocketAddrV4) -> u64 {
    u64::from(a.ip().to_bits()) << 16 | u64::from(a.port())
}

impl FlowKey {
    fn of(a: SocketAddr, b: SocketAddr) -> FlowKey {
        let ordered = match (a, b) {
            (SocketAddr::V4(x), SocketAddr::V4(y)) => packed(x) <= packed(y),
            _ => a <= b,
        };
        if ordered {
            FlowKey(a, b)
        } else {
            FlowKey(b, a)
        }
    }
}

impl Hash for FlowKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // Equal keys hash equally: a V4 pair only equals a V4 pair.
        match (self.0, self.1) {
            (SocketAddr::V4(a), SocketAddr::V4(b)) => {
                h.write_u128(u128::from(packed(a)) << 64 | u128::from(packed(b)))
            }
            (a, b) => {
                a.hash(h);
                b.hash(h);
            }
        }
    }
}

struct Flow {
    info: ConnInfo,
    /// [to server, to client]
    halves: [Reassembler; 2],
    client_isn: Option<u32>,
    last_ts_ns: i64,
    /// The lowest `last_ts_ns` this flow has in `FlowTable::idle` (never above
    /// `last_ts_ns`): a later packet leaves the entry as is, an earlier one
    /// (timestamps can go back) adds a new entry.
    queued_ts_ns: i64,
}

/// A flow's place in the eviction order: idlest first, then oldest id.
/// Entries go stale when the flow is seen again or closed; eviction checks
/// each against the table.
#[derive(Clone, Copy)]
struct IdleEntry {
    ts_ns: i64,
    id: u64,
    key: FlowKey,
}

impl IdleEntry {
    fn rank(&self) -> (i64, u64) {
        (self.ts_ns, self.id)
    }
}

impl PartialEq for IdleEntry {
    fn eq(&self, o: &Self) -> bool {
        self.rank() == o.rank()
    }
}
impl Eq for IdleEntry {}
impl PartialOrd for IdleEntry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for IdleEntry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.rank().cmp(&o.rank())
    }
}

impl Flow {
    fn dir_of(&self, src: SocketAddr) -> Dir {
        if src == self.info.client {
            Dir::ToServer
        } else {
            Dir::ToClient
        }
    }

    fn both_ended(&self) -> bool {
        self.halves.iter().all(Reassembler::is_ended)
    }
}

impl NetStats {
    /// Adds another shard's counts.
    pub fn add(&mut self, b: &NetStats) {
        let NetStats {
            tcp_segments,
            non_tcp_packets,
            ip_fragments,
            malformed_packets,
            unsupported_link_packets,
            connections,
            snaplen_cut_segments,
            snaplen_cut_bytes,
            gaps,
            gap_bytes,
            retransmitted_bytes,
            overlap_conflicts,
            out_of_order_segments,
            reassembly_limit_hits,
            flows_evicted,
        } = b;
        self.tcp_segments += tcp_segments;
        self.non_tcp_packets += non_tcp_packets;
        self.ip_fragments += ip_fragments;
        self.malformed_packets += malformed_packets;
        self.unsupported_link_packets += unsupported_link_packets;
        self.connections += connections;
        self.snaplen_cut_segments += snaplen_cut_segments;
        self.snaplen_cut_bytes += snaplen_cut_bytes;
        self.gaps += gaps;
        self.gap_bytes += gap_bytes;
        self.retransmitted_bytes += retransmitted_bytes;
        self.overlap_conflicts += overlap_conflicts;
        self.out_of_order_segments += out_of_order_segments;
        self.reassembly_limit_hits += reassembly_limit_hits;
        self.flows_evicted += flows_evicted;
    }
}

/// Tracks TCP connections and reassembles both directions of each.
pub struct FlowTable {
    /// Keyed with a per-process random seed: the addresses come from the capture.
    flows: HashMap<FlowKey, Flow, RandomState>,
    /// Min-heap over (last seen, id) for --max-flows eviction, with stale
    /// entries skipped when popped: scanning every flow per new flow past
    /// the limit was quadratic in the number of SYNs.
    idle: BinaryHeap<Reverse<IdleEntry>>,
    next_id: u64,
    service_ports: Vec<u16>,
    limits: FlowLimits,
    stats: NetStats,
}

impl FlowTable {
    /// `service_ports` are the ports servers listen on (gRPC and REST); they
    /// decide the roles of connections picked up without their handshake.
    pub fn new(service_ports: Vec<u16>, limits: FlowLimits) -> Self {
        FlowTable {
            flows: HashMap::default(),
            idle: BinaryHeap::new(),
            next_id: 0,
            service_ports,
            limits,
            stats: NetStats::default(),
        }
    }

    pub fn stats(&self) -> NetStats {
        let mut s = self.stats.clone();
        for f in self.flows.values() {
            add_reassembly_stats(&mut s, &f.halves);
        }
        s
    }

    pub fn open_flows(&self) -> usize {
        self.flows.len()
    }

    /// Processes one captured packet.
    pub fn packet(&mut self, p: &Packet<'_>, sink: &mut impl FlowSink) {
        match tcp_segment(p.link, p.data) {
            Ok(seg) => self.segment(&seg, p.frame, p.ts_ns, sink),
            Err(skip) => self.skipped(skip),
        }
    }

    /// Counts a packet that carries no TCP segment to follow.
    pub fn skipped(&mut self, skip: Skip) {
        let s = &mut self.stats;
        match skip {
            Skip::NotTcp => s.non_tcp_packets += 1,
            Skip::Fragment => s.ip_fragments += 1,
            Skip::Malformed => s.malformed_packets += 1,
            Skip::UnsupportedLink => s.unsupported_link_packets += 1,
        }
    }

    pub fn segment(
        &mut self,
        seg: &TcpSegment<'_>,
        frame: u64,
        ts_ns: i64,
        sink: &mut impl FlowSink,
    ) {
        self.stats.tcp_segments += 1;
        if self.idle.len() > 2 * self.flows.len() + 64 {
            // Amortised: at least as many pushes as open flows since the last.
            self.rebuild_idle();
        }
        if seg.missing > 0 {
            self.stats.snaplen_cut_segments += 1;
            self.stats.snaplen_cut_bytes += u64::from(seg.missing);
        }
        let key = FlowKey::of(seg.src, seg.dst);

        // A fresh SYN on a finished (or differently numbered) connection is a
        // new connection reusing the 4-tuple.
        if seg.syn && seg.ack.is_none() {
            if let Some(f) = self.flows.get(&key) {
                let reused = f.both_ended()
                    || f.halves.iter().any(Reassembler::is_ended)
                    || f.client_isn.is_some_and(|isn| isn != seg.seq);
                if reused {
                    self.close(key, sink);
                }
            }
        }

        // Pure ACKs and stray FIN/RST of unknown connections carry nothing to decode.
        let may_open = !seg.payload.is_empty() || seg.syn;
        if may_open && self.flows.len() >= self.limits.max_flows && !self.flows.contains_key(&key) {
            self.evict_idlest(sink);
        }
        // One hash lookup per packet of an established flow.
        let flow = match self.flows.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(_) if !may_open => return,
            Entry::Vacant(v) => {
                let (client, server, roles) = roles(&self.service_ports, seg);
                let info = ConnInfo {
                    id: self.next_id,
                    client,
                    server,
                    client_text: client.to_string(),
                    server_text: server.to_string(),
                    roles,
                    first_frame: frame,
                    first_ts_ns: ts_ns,
                };
                self.next_id += 1;
                self.stats.connections += 1;
                sink.opened(&info);
                let r = self.limits.reassembly;
                self.idle.push(Reverse(IdleEntry {
                    ts_ns,
                    id: info.id,
                    key,
                }));
                v.insert(Flow {
                    info,
                    halves: [Reassembler::new(r), Reassembler::new(r)],
                    client_isn: None,
                    last_ts_ns: ts_ns,
                    queued_ts_ns: ts_ns,
                })
            }
        };
        flow.last_ts_ns = ts_ns;
        if ts_ns < flow.queued_ts_ns {
            // Rare (capture timestamps out of order): keep an entry at or
            // below the last-seen time so the heap's order stays a lower bound.
            flow.queued_ts_ns = ts_ns;
            self.idle.push(Reverse(IdleEntry {
                ts_ns,
                id: flow.info.id,
                key,
            }));
        }
        let dir = flow.dir_of(seg.src);
        if seg.syn && dir == Dir::ToServer {
            flow.client_isn = Some(seg.seq);
        }
        let conn = flow.info.id;
        {
            let mut out = |d: Delivery<'_>| sink.data(conn, dir, d);
            flow.halves[dir.index()].segment(
                seg.seq,
                seg.payload,
                seg.syn,
                seg.fin,
                seg.rst,
                frame,
                ts_ns,
                &mut out,
            );
        }
        if let Some(ack) = seg.ack {
            let other = match dir {
                Dir::ToServer => Dir::ToClient,
                Dir::ToClient => Dir::ToServer,
            };
            let mut out = |d: Delivery<'_>| sink.data(conn, other, d);
            flow.halves[other.index()].ack(ack, &mut out);
        }
        if seg.rst {
            // A reset ends both directions at once.
            let other = 1 - dir.index();
            let mut out = |d: Delivery<'_>| sink.data(conn, Dir::from_index(other), d);
            flow.halves[other].flush(&mut out);
            self.close(key, sink);
        } else if flow.both_ended() {
            self.close(key, sink);
        }
    }

    /// End of input: flush every connection (in connection order) and close it.
    pub fn finish(&mut self, sink: &mut impl FlowSink) {
        let mut keys: Vec<(u64, FlowKey)> =
            self.flows.iter().map(|(k, f)| (f.info.id, *k)).collect();
        keys.sort_unstable_by_key(|(id, _)| *id);
        for (_, k) in keys {
            self.close(k, sink);
        }
    }

    /// Closes connections idle since before `cutoff_ns` (live capture).
    pub fn expire_idle(&mut self, cutoff_ns: i64, sink: &mut impl FlowSink) -> usize {
        let mut keys: Vec<(u64, FlowKey)> = self
            .flows
            .iter()
            .filter(|(_, f)| f.last_ts_ns < cutoff_ns)
            .map(|(k, f)| (f.info.id, *k))
            .collect();
        keys.sort_unstable_by_key(|(id, _)| *id);
        for (_, k) in &keys {
            self.close(*k, sink);
        }
        keys.len()
    }

    /// Closes the flow with the lowest (last seen, id), as a scan of every
    /// flow would pick. Each live flow has a heap entry at its `queued_ts_ns`
    /// <= `last_ts_ns`, so the first popped entry that is current (the flow's
    /// queued time and also its last-seen time) is the minimum.
    fn evict_idlest(&mut self, sink: &mut impl FlowSink) {
        while let Some(Reverse(e)) = self.idle.pop() {
            let Some(f) = self.flows.get_mut(&e.key) else {
                continue;
            };
            if f.info.id != e.id || f.queued_ts_ns != e.ts_ns {
                // A closed flow, the key reused, or a superseded entry.
                continue;
            }
            if f.last_ts_ns != e.ts_ns {
                // Seen since it was queued: requeue at its last-seen time.
                f.queued_ts_ns = f.last_ts_ns;
                self.idle.push(Reverse(IdleEntry {
                    ts_ns: f.last_ts_ns,
                    ..e
                }));
                continue;
            }
            self.stats.flows_evicted += 1;
            self.close(e.key, sink);
            return;
        }
    }

    /// Drops stale entries (closed flows, superseded times) so the heap
    /// stays proportional to the open flows.
    fn rebuild_idle(&mut self) {
        let entries: Vec<Reverse<IdleEntry>> = self
            .flows
            .iter_mut()
            .map(|(k, f)| {
                f.queued_ts_ns = f.last_ts_ns;
                Reverse(IdleEntry {
                    ts_ns: f.last_ts_ns,
                    id: f.info.id,
                    key: *k,
                })
            })
            .collect();
        self.idle = BinaryHeap::from(entries);
    }

    fn close(&mut self, key: FlowKey, sink: &mut impl FlowSink) {
        let Some(mut flow) = self.flows.remove(&key) else {
            return;
        };
        let conn = flow.info.id;
        for dir in [Dir::ToServer, Dir::ToClient] {
            let mut out = |d: Delivery<'_>| sink.data(conn, dir, d);
            flow.halves[dir.index()].flush(&mut out);
        }
        add_reassembly_stats(&mut self.stats, &flow.halves);
        sink.closed(conn);
    }
}

fn roles(service_ports: &[u16], seg: &TcpSegment<'_>) -> (SocketAddr, SocketAddr, RoleSource) {
    if seg.syn {
        return if seg.ack.is_none() {
            (seg.src, seg.dst, RoleSource::Handshake)
        } else {
            (seg.dst, seg.src, RoleSource::Handshake)
        };
    }
    let dst_service = service_ports.contains(&seg.dst.port());
    let src_service = service_ports.contains(&seg.src.port());
    match (src_service, dst_service) {
        (false, true) => (seg.src, seg.dst, RoleSource::ServicePort),
        (true, false) => (seg.dst, seg.src, RoleSource::ServicePort),
        _ if seg.src.port() > seg.dst.port() => (seg.src, seg.dst, RoleSource::LowerPort),
        _ => (seg.dst, seg.src, RoleSource::LowerPort),
    }
}

impl Dir {
    fn from_index(i: usize) -> Dir {
        if i == 0 {
            Dir::ToServer
        } else {
            Dir::ToClient
        }
    }
}

fn add_reassembly_stats(s: &mut NetStats, halves: &[Reassembler; 2]) {
    for h in halves {
        let r = h.stats();
        s.gaps += r.gaps;
        s.gap_bytes += r.gap_bytes;
        s.retransmitted_bytes += r.retransmitted_bytes;
        s.overlap_conflicts += r.overlap_conflicts;
        s.out_of_order_segments += r.out_of_order_segments;
        s.reassembly_limit_hits += r.buffer_limit_hits;
    }
}

/// A connection between two addresses seen from its handshake, for unit
/// tests that build exchanges by hand.
#[cfg(test)]
pub(crate) fn test_conn(id: u64, client: &str, server: &str) -> ConnInfo {
    let addr = |a: &str| -> SocketAddr {
        let Ok(a) = a.parse() else {
            panic!("{a} is an address");
        };
        a
    };
    ConnInfo {
        id,
        client: addr(client),
        server: addr(server),
        client_text: client.to_string(),
        server_text: server.to_string(),
        roles: RoleSource::Handshake,
        first_frame: 1,
        first_ts_ns: 0,
    }
}

#[cfg(test)]
impl FlowTable {
    /// The flow a scan of every open flow picks for eviction: what
    /// `evict_idlest` must agree with.
    fn idlest_by_scan(&self) -> Option<u64> {
        self.flows
            .values()
            .min_by_key(|f| (f.last_ts_ns, f.info.id))
            .map(|f| f.info.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Records which connection each `closed` names, in order.
    #[derive(Default)]
    struct Closes(Vec<u64>);

    impl FlowSink for Closes {
        fn opened(&mut self, _: &ConnInfo) {}
        fn data(&mut self, _: u64, _: Dir, _: Delivery<'_>) {}
        fn closed(&mut self, conn: u64) {
            self.0.push(conn);
        }
    }

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn eviction_closes_exactly_the_idlest_flow() {
        let server: SocketAddr = "10.0.0.1:8500".parse().expect("address");
        for seed in 1..=20u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let max_flows = 1 + (seed as usize % 7) * 3;
            let limits = FlowLimits {
                max_flows,
                ..FlowLimits::default()
            };
            let mut table = FlowTable::new(vec![8500], limits);
            let mut sink = Closes::default();
            let mut fresh_port = 1024u16;
            let mut evictions = 0;
            for i in 0..3000u64 {
                let r = xorshift(&mut rng);
                // Timestamps mostly rise, with ties and jumps back.
                let ts = (i / 3) as i64 + (r % 5) as i64 - 2;
                let (port, syn, rst) = match r >> 8 & 7 {
                    0 | 1 => {
                        fresh_port += 1;
                        (fresh_port, true, false)
                    }
                    2 => (1024 + (r >> 16) as u16 % 64, false, true),
                    // Data on an open flow, or on a closed one (reopened).
                    _ => (
                        1024 + (r >> 16) as u16 % 64.max(fresh_port - 1023),
                        false,
                        false,
                    ),
                };
                let client = SocketAddr::from(([10, 0, 0, 2], port));
                let seg = TcpSegment {
                    src: client,
                    dst: server,
                    seq: 1000,
                    ack: (!syn).then_some(1),
                    syn,
                    fin: false,
                    rst,
                    payload: if syn { b"" } else { b"x" },
                    missing: 0,
                };
                let expected = table.idlest_by_scan();
                let before = (table.stats.flows_evicted, sink.0.len());
                table.segment(&seg, i, ts, &mut sink);
                if table.stats.flows_evicted > before.0 {
                    evictions += 1;
                    // No SYN reuses an open flow here, so the eviction is
                    // the first close of the segment.
                    assert_eq!(
                        sink.0.get(before.1).copied(),
                        expected,
                        "seed {seed} packet {i}"
                    );
                }
                assert!(table.open_flows() <= max_flows);
                assert!(table.idle.len() <= 2 * table.open_flows() + 64 + 2);
            }
            assert!(evictions > 100, "seed {seed}: {evictions} evictions");
        }
    }

    #[test]
    fn packed_flow_keys_order_and_hash_like_socket_addrs() {
        // Addresses and ports around the byte boundaries, where a packing
        // mistake would reorder them.
        let ips = [0u32, 1, 0xff, 0x100, 0x0a00_0001, 0x7f00_0001, 0xffff_ffff];
        let ports = [0u16, 1, 255, 256, 8500, 65535];
        let v4: Vec<SocketAddr> = ips
            .iter()
            .flat_map(|&ip| {
                ports
                    .iter()
                    .map(move |&p| SocketAddr::from((std::net::Ipv4Addr::from_bits(ip), p)))
            })
            .collect();
        let v6: SocketAddr = "[::1]:8500".parse().expect("address");
        let state = RandomState::default();
        for &a in v4.iter().chain([&v6]) {
            for &b in v4.iter().chain([&v6]) {
                let (SocketAddr::V4(x), SocketAddr::V4(y)) = (a, b) else {
                    continue;
                };
                assert_eq!(packed(x) <= packed(y), a <= b, "{a} vs {b}");
                let (k, back) = (FlowKey::of(a, b), FlowKey::of(b, a));
                assert_eq!(k, back);
                assert!(k.0 <= k.1);
                assert_eq!(state.hash_one(k), state.hash_one(back));
            }
            let mixed = (FlowKey::of(a, v6), FlowKey::of(v6, a));
            assert_eq!(mixed.0, mixed.1);
            assert_eq!(state.hash_one(mixed.0), state.hash_one(mixed.1));
        }
    }
}
