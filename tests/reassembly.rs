//! TCP reassembly end to end: real captures with packets reordered,
//! duplicated or cut decode to the same exchanges, or say what was lost.

use tfwire::capture::Packet;
use tfwire::pipeline::{Analyzer, Config};
use tfwire::tfserving::Exchange;

use crate::support::{load, Owned};

fn run(packets: &[Owned]) -> Vec<Exchange> {
    let mut out = Vec::new();
    {
        let mut a = Analyzer::new(Config::default(), |ex: Exchange| {
            out.push(ex);
            true
        });
        for (i, p) in packets.iter().enumerate() {
            a.packet(&Packet {
                frame: i as u64 + 1,
                ts_ns: p.ts_ns,
                link: p.link,
                data: &p.data,
                orig_len: p.data.len() as u32,
            });
        }
        a.finish();
    }
    out.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    out
}

/// What must survive any reordering: the decoded content of each exchange.
fn essence(ex: &[Exchange]) -> Vec<String> {
    ex.iter()
        .map(|e| {
            format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {}",
                e.request_id,
                e.method,
                e.model,
                e.inputs
                    .iter()
                    .map(|t| (&t.name, t.dtype, &t.shape, t.values))
                    .collect::<Vec<_>>(),
                e.status.grpc_code,
                e.status.message,
                e.complete
            )
        })
        .collect()
}

#[test]
fn reordered_and_duplicated_segments_decode_identically() {
    for name in [
        "grpc_basic.pcapng",
        "grpc_concurrent.pcapng",
        "grpc_large.pcapng",
    ] {
        let packets = load(name);
        let baseline = essence(&run(&packets));
        assert!(!baseline.is_empty());

        // Swap neighbours (out-of-order delivery) and repeat every 4th packet
        // (retransmissions), keeping each handshake first.
        let mut perturbed: Vec<Owned> = Vec::new();
        let mut i = 0;
        while i < packets.len() {
            let take = |j: usize| Owned {
                link: packets[j].link,
                ts_ns: packets[j].ts_ns,
                data: packets[j].data.clone(),
            };
            if i >= 3 && i + 1 < packets.len() && i % 3 == 0 {
                perturbed.push(take(i + 1));
                perturbed.push(take(i));
                i += 2;
            } else {
                perturbed.push(take(i));
                if i % 4 == 0 {
                    perturbed.push(take(i));
                }
                i += 1;
            }
        }
        assert_eq!(essence(&run(&perturbed)), baseline, "{name}");
    }
}

#[test]
fn lost_packet_marks_only_its_exchange_incomplete() {
    let packets = load("grpc_large.pcapng");
    let baseline = run(&packets);
    assert!(baseline.iter().all(|e| e.complete));
    // Drop one full-size segment from the middle of the 3 MB request.
    let big = packets
        .iter()
        .enumerate()
        .filter(|(_, p)| p.data.len() > 30_000)
        .map(|(i, _)| i)
        .nth(10)
        .expect("a large segment");
    let kept: Vec<Owned> = packets
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != big)
        .map(|(_, p)| Owned {
            link: p.link,
            ts_ns: p.ts_ns,
            data: p.data.clone(),
        })
        .collect();
    let after = run(&kept);
    assert_eq!(
        after.len(),
        baseline.len(),
        "every exchange is still reported"
    );
    let hit: Vec<&Exchange> = after.iter().filter(|e| !e.complete).collect();
    assert_eq!(
        hit.len(),
        1,
        "{:#?}",
        after.iter().map(|e| &e.notes).collect::<Vec<_>>()
    );
    assert!(
        hit[0].notes.iter().any(|n| n.contains("not captured")),
        "{:?}",
        hit[0].notes
    );
    // The server's answer is still read from the same stream.
    assert_eq!(hit[0].status.grpc_code, Some(0));
    for e in after.iter().filter(|e| e.complete) {
        let b = baseline
            .iter()
            .find(|b| b.request_id == e.request_id)
            .expect("same id");
        assert_eq!(
            essence(std::slice::from_ref(e)),
            essence(std::slice::from_ref(b))
        );
    }
}

/// Deterministic xorshift, so a failure reproduces.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.max(1);
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// The decoded content that must not change when other calls lose packets.
fn content(e: &Exchange) -> String {
    format!(
        "{:?} {:?} {:?}",
        e.method,
        e.model,
        e.inputs
            .iter()
            .map(|t| (&t.name, t.dtype, &t.shape, t.values))
            .collect::<Vec<_>>(),
    )
}

/// A status may become unknown (HPACK entries lost with another call's
/// packet), but never different.
fn status_consistent(lossy: &Exchange, full: &Exchange) -> bool {
    let code_ok =
        lossy.status.grpc_code.is_none() || lossy.status.grpc_code == full.status.grpc_code;
    let msg_ok = lossy.status.message.is_none() || lossy.status.message == full.status.message;
    let explained = lossy.status.grpc_code.is_some() || !lossy.notes.is_empty();
    code_ok && msg_ok && explained
}

#[test]
fn five_percent_loss_only_hurts_the_exchanges_that_lost_bytes() {
    let cases = [
        "grpc_basic.pcapng",
        "grpc_concurrent.pcapng",
        "grpc_diagnosis.pcapng",
        "grpc_compressed.pcap",
    ]
    .iter()
    .flat_map(|n| (1..=12u64).map(move |s| (*n, s * 7919)));
    let mut lossy_runs = 0;
    for (name, seed) in cases {
        let packets = load(name);
        let baseline = run(&packets);
        let mut next = rng(seed);
        let dropped: Vec<usize> = (0..packets.len()).filter(|_| next() % 100 < 5).collect();
        if dropped.is_empty() {
            continue;
        }
        lossy_runs += 1;
        let kept: Vec<Owned> = packets
            .iter()
            .enumerate()
            .filter(|(i, _)| !dropped.contains(i))
            .map(|(_, p)| Owned {
                link: p.link,
                ts_ns: p.ts_ns,
                data: p.data.clone(),
            })
            .collect();
        // Frame numbers shift when packets are removed: map them back.
        let original: Vec<u64> = (0..packets.len() as u64)
            .filter(|i| !dropped.contains(&(*i as usize)))
            .map(|i| i + 1)
            .collect();
        let lossy = run(&kept);
        let mut wrong = Vec::new();
        let mut untouched = 0;
        for b in &baseline {
            let hit = b
                .request_frames
                .iter()
                .chain(&b.response_frames)
                .any(|f| dropped.contains(&(*f as usize - 1)));
            let same_stream = lossy
                .iter()
                .find(|l| l.stream == b.stream && l.connection == b.connection);
            match same_stream {
                Some(l) if !hit => {
                    untouched += 1;
                    // Without :path, a call with nothing decodable (or an
                    // ambiguous request) cannot be named: null, with a note.
                    let ambiguous = l.method.is_none()
                        && (l.notes.iter().any(|n| n.contains("look the same"))
                            || (b.model.is_none() && b.inputs.is_empty()));
                    if content(l) != content(b) && !ambiguous {
                        wrong.push(format!(
                            "{:?} (no packet lost):\n  {}\n  {}",
                            b.request_id,
                            content(b),
                            content(l)
                        ));
                    }
                    if !status_consistent(l, b) {
                        wrong.push(format!(
                            "{:?}: status {:?} vs {:?} ({:?})",
                            b.request_id, l.status, b.status, l.notes
                        ));
                    }
                    let frames_back: Vec<u64> = l
                        .request_frames
                        .iter()
                        .map(|f| original[*f as usize - 1])
                        .collect();
                    if frames_back != b.request_frames {
                        wrong.push(format!(
                            "{:?}: frames {:?} vs {:?}",
                            b.request_id, frames_back, b.request_frames
                        ));
                    }
                }
                None if !hit => wrong.push(format!(
                    "{:?}: lost although none of its packets were",
                    b.request_id
                )),
                Some(l) if l.complete && content(l) != content(b) => wrong.push(format!(
                    "{:?}: changed but claims to be complete",
                    b.request_id
                )),
                _ => {}
            }
        }
        assert!(
            untouched > baseline.len() / 2,
            "{name}: only {untouched} untouched"
        );
        assert!(
            wrong.is_empty(),
            "{name} seed {seed}, dropped {dropped:?}:\n{}",
            wrong.join("\n")
        );
    }
    assert!(lossy_runs >= 40, "{lossy_runs} runs dropped packets");
}
