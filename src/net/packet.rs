//! Link → IP → TCP slicing. etherparse does Ethernet/VLAN/IP/TCP in lax mode
//! (truncated packets still yield what they hold); the Linux cooked headers
//! and BSD loopback headers are small shims in front of it.

use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use crate::capture::LinkType;

/// A TCP segment as seen on the wire.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: Option<u32>,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: &'a [u8],
    /// Payload bytes the IP header announces but the capture does not hold.
    pub missing: u32,
}

/// Why a packet did not yield a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not TCP (UDP, ICMP, ARP, other ethertypes).
    NotTcp,
    /// An IP fragment; TCP over fragmented IP is not reassembled.
    Fragment,
    /// Link type this tool does not decode.
    UnsupportedLink,
    /// Headers cut short or inconsistent.
    Malformed,
}

/// Slices one captured packet down to its TCP segment.
pub fn tcp_segment(link: LinkType, data: &[u8]) -> Result<TcpSegment<'_>, Skip> {
    match fast_path(link, data) {
        Some(seg) => Ok(seg),
        None => sliced(link, data),
    }
}

/// The common packet, sliced by hand: Ethernet II (or raw IP) carrying an
/// IPv4 header without options or an IPv6 header without extension headers,
/// not fragmented, wholly captured, then a complete TCP header. Anything else
/// (VLAN tags, options, fragments, snaplen cuts, odd lengths) returns None and
/// goes through etherparse, which this must agree with wherever it answers.
fn fast_path(link: LinkType, data: &[u8]) -> Option<TcpSegment<'_>> {
    // The IP version the link layer announces (raw links: the version nibble).
    let (version, ip) = match link {
        LinkType::ETHERNET => match data.get(12..14)? {
            [0x08, 0x00] => (4, &data[14..]),
            [0x86, 0xdd] => (6, &data[14..]),
            _ => return None,
        },
        LinkType::RAW
        | LinkType::RAW_BSD12
        | LinkType::RAW_BSD14
        | LinkType::IPV4
        | LinkType::IPV6 => (*data.first()? >> 4, data),
        _ => return None,
    };
    let be16 = |b: &[u8], at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
    };
    let (src, dst, tcp) = match (version, *ip.first()?) {
        // Version 4, header length 5 words.
        (4, 0x45) => {
            let header: &[u8; 20] = ip.get(..20)?.try_into().ok()?;
            let total = usize::from(be16(header, 2)?);
            // More-fragments flag or an offset: a fragment.
            if be16(header, 6)? & 0x3fff != 0 || header[9] != 6 || total > ip.len() {
                return None;
            }
            let src: [u8; 4] = header[12..16].try_into().ok()?;
            let dst: [u8; 4] = header[16..20].try_into().ok()?;
            (IpAddr::from(src), IpAddr::from(dst), ip.get(20..total)?)
        }
        (6, b) if b >> 4 == 6 => {
            let header: &[u8; 40] = ip.get(..40)?.try_into().ok()?;
            let len = usize::from(be16(header, 4)?);
            // Next header TCP; a zero length would be a jumbogram.
            if header[6] != 6 || len == 0 {
                return None;
            }
            let src: [u8; 16] = header[8..24].try_into().ok()?;
            let dst: [u8; 16] = header[24..40].try_into().ok()?;
            (IpAddr::from(src), IpAddr::from(dst), ip[40..].get(..len)?)
        }
        _ => return None,
    };
    let header: &[u8; 20] = tcp.get(..20)?.try_into().ok()?;
    let data_offset = usize::from(header[12] >> 4) * 4;
    if data_offset < 20 {
        return None;
    }
    let payload = tcp.get(data_offset..)?;
    let flags = header[13];
    let word = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    Some(TcpSegment {
        src: SocketAddr::new(src, be16(header, 0)?),
        dst: SocketAddr::new(dst, be16(header, 2)?),
        seq: word(4),
        ack: (flags & 0x10 != 0).then(|| word(8)),
        syn: flags & 0x02 != 0,
        fin: flags & 0x01 != 0,
        rst: flags & 0x04 != 0,
        payload,
        missing: 0,
    })
}

/// The general path: etherparse in lax mode, behind the link-layer shims.
fn sliced(link: LinkType, data: &[u8]) -> Result<TcpSegment<'_>, Skip> {
    let sliced = match link {
        LinkType::ETHERNET => LaxSlicedPacket::from_ethernet(data).map_err(|_| Skip::Malformed)?,
        LinkType::RAW
        | LinkType::RAW_BSD12
        | LinkType::RAW_BSD14
        | LinkType::IPV4
        | LinkType::IPV6 => LaxSlicedPacket::from_ip(data).map_err(|_| Skip::Malformed)?,
        // Linux cooked v1: 16 bytes, protocol (an ethertype) in the last two.
        LinkType::LINUX_SLL => {
            let hdr = data.get(..16).ok_or(Skip::Malformed)?;
            let proto = u16::from_be_bytes([hdr[14], hdr[15]]);
            LaxSlicedPacket::from_ether_type(EtherType(proto), &data[16..])
        }
        // Linux cooked v2: 20 bytes, protocol first.
        LinkType::LINUX_SLL2 => {
            let hdr = data.get(..20).ok_or(Skip::Malformed)?;
            let proto = u16::from_be_bytes([hdr[0], hdr[1]]);
            LaxSlicedPacket::from_ether_type(EtherType(proto), &data[20..])
        }
        // BSD loopback: a 4-byte address family in host (NULL) or network
        // (LOOP) order. The AF values for IPv6 differ between BSDs, so the IP
        // version nibble is the reliable discriminator.
        LinkType::NULL | LinkType::LOOP => {
            let ip = data.get(4..).ok_or(Skip::Malformed)?;
            LaxSlicedPacket::from_ip(ip).map_err(|_| Skip::Malformed)?
        }
        _ => return Err(Skip::UnsupportedLink),
    };
    let Some(net) = &sliced.net else {
        return Err(if sliced.stop_err.is_some() {
            Skip::Malformed
        } else {
            Skip::NotTcp
        });
    };
    let (src_ip, dst_ip, ip_payload) = match net {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload(),
            )
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload(),
            )
        }
        LaxNetSlice::Arp(_) => return Err(Skip::NotTcp),
    };
    if ip_payload.fragmented {
        return Err(Skip::Fragment);
    }
    if ip_payload.ip_number != etherparse::IpNumber::TCP {
        return Err(Skip::NotTcp);
    }
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        return Err(Skip::Malformed);
    };
    let payload = tcp.payload();
    // When the IP header's length is the source, bytes cut by snaplen are known.
    let missing = if ip_payload.incomplete {
        let announced = match net {
            LaxNetSlice::Ipv4(v4) => {
                let h = v4.header();
                usize::from(h.total_len()).saturating_sub(usize::from(h.ihl()) * 4)
            }
            LaxNetSlice::Ipv6(v6) => usize::from(v6.header().payload_length()),
            LaxNetSlice::Arp(_) => 0,
        };
        // Announced IP payload minus what we hold of it (TCP header + data).
        let held = ip_payload.payload.len();
        announced.saturating_sub(held) as u32
    } else {
        0
    };
    Ok(TcpSegment {
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack: tcp.ack().then(|| tcp.acknowledgment_number()),
        syn: tcp.syn(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_v4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 8500, 1000, 65535)
            .ack(77)
            .psh();
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("build");
        out
    }

    #[test]
    fn ethernet_ipv4_tcp() {
        let pkt = tcp_v4(b"hello");
        let s = tcp_segment(LinkType::ETHERNET, &pkt).expect("tcp");
        assert_eq!(s.src.to_string(), "10.0.0.1:40000");
        assert_eq!(s.dst.to_string(), "10.0.0.2:8500");
        assert_eq!(s.seq, 1000);
        assert_eq!(s.ack, Some(77));
        assert_eq!(s.payload, b"hello");
        assert_eq!(s.missing, 0);
    }

    #[test]
    fn snaplen_cut_counts_missing_bytes() {
        let pkt = tcp_v4(&[7u8; 100]);
        let cut = &pkt[..pkt.len() - 40];
        let s = tcp_segment(LinkType::ETHERNET, cut).expect("tcp");
        assert_eq!(s.payload.len(), 60);
        assert_eq!(s.missing, 40);
    }

    #[test]
    fn vlan_sll_sll2_null_raw() {
        // 802.1Q-tagged frame.
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(etherparse::VlanId::try_new(42).expect("vlan"))
            .ipv6([1; 16], [2; 16], 64)
            .tcp(1, 8500, 5, 100);
        let mut pkt = Vec::new();
        b.write(&mut pkt, b"xy").expect("build");
        let s = tcp_segment(LinkType::ETHERNET, &pkt).expect("vlan tcp");
        assert_eq!(s.payload, b"xy");
        assert_eq!(s.dst.port(), 8500);

        let ip_only = &tcp_v4(b"abc")[14..];
        assert_eq!(
            tcp_segment(LinkType::RAW, ip_only).expect("raw").payload,
            b"abc"
        );
        assert_eq!(
            tcp_segment(LinkType::IPV4, ip_only).expect("ipv4").payload,
            b"abc"
        );

        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&0x0800u16.to_be_bytes());
        sll.extend_from_slice(ip_only);
        assert_eq!(
            tcp_segment(LinkType::LINUX_SLL, &sll).expect("sll").payload,
            b"abc"
        );

        let mut sll2 = 0x0800u16.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(ip_only);
        assert_eq!(
            tcp_segment(LinkType::LINUX_SLL2, &sll2)
                .expect("sll2")
                .payload,
            b"abc"
        );

        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(ip_only);
        assert_eq!(
            tcp_segment(LinkType::NULL, &null).expect("null").payload,
            b"abc"
        );
        let mut lo = 2u32.to_be_bytes().to_vec();
        lo.extend_from_slice(ip_only);
        assert_eq!(
            tcp_segment(LinkType::LOOP, &lo).expect("loop").payload,
            b"abc"
        );
    }

    /// Wherever the hand-sliced path answers, it answers as etherparse does:
    /// packets of every shape, then with bytes flipped, cut or extended.
    #[test]
    fn fast_path_agrees_with_etherparse_on_mutated_packets() {
        let mut bases: Vec<(LinkType, Vec<u8>)> = Vec::new();
        for payload in [&b""[..], b"x", &[0x55; 300]] {
            let v4 = tcp_v4(payload);
            bases.push((LinkType::RAW, v4[14..].to_vec()));
            bases.push((LinkType::ETHERNET, v4));
            let b = PacketBuilder::ethernet2([1; 6], [2; 6])
                .ipv6([1; 16], [2; 16], 64)
                .tcp(1, 8500, 5, 100)
                .syn();
            let mut v6 = Vec::new();
            b.write(&mut v6, payload).expect("build");
            bases.push((LinkType::IPV6, v6[14..].to_vec()));
            bases.push((LinkType::ETHERNET, v6));
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let mut answered = 0;
        for i in 0..200_000 {
            let (link, base) = &bases[i % bases.len()];
            let mut p = base.clone();
            // Sometimes the other IP version's ethertype or version nibble.
            if next(8) == 0 {
                let at = if *link == LinkType::ETHERNET { 12 } else { 0 };
                let (v4, v6) = if at == 12 { (0x08, 0x86) } else { (0x45, 0x60) };
                p[at] = if p[at] == v4 { v6 } else { v4 };
                if at == 12 {
                    p[13] = if p[12] == 0x08 { 0x00 } else { 0xdd };
                }
            }
            // Mostly the headers (first 74 bytes), sometimes anywhere.
            for _ in 0..1 + next(3) {
                let span = if next(4) == 0 { p.len() } else { 74 };
                let at = next(p.len().min(span).max(1));
                if let Some(b) = p.get_mut(at) {
                    *b = match next(3) {
                        0 => next(256) as u8,
                        1 => *b ^ (1 << next(8)),
                        _ => [0, 5, 6, 8, 0x40, 0x45, 0x46, 0x60, 0x86, 0xdd, 0xff][next(11)],
                    };
                }
            }
            match next(4) {
                0 => p.truncate(next(p.len() + 1)),
                1 => p.extend((0..next(8)).map(|_| next(256) as u8)),
                _ => {}
            }
            if let Some(fast) = fast_path(*link, &p) {
                answered += 1;
                let slow = sliced(*link, &p).expect("etherparse takes what the fast path took");
                assert_eq!(
                    format!("{fast:?}"),
                    format!("{slow:?}"),
                    "{link:?} {p:02x?}"
                );
            }
        }
        assert!(answered > 20_000, "fast path answered {answered}");
    }

    #[test]
    fn garbage_is_not_a_panic() {
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            for lt in [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 999] {
                let _ = tcp_segment(LinkType(lt), &junk);
            }
        }
        assert_eq!(
            tcp_segment(LinkType(999), &[0u8; 40]).err(),
            Some(Skip::UnsupportedLink)
        );
    }
}
