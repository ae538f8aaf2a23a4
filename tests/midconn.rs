//! Captures that start in the middle of a connection: frame boundaries are
//! found again, HPACK references to unseen entries become "unknown", and the
//! method and outcome are inferred from what is left, marked as inferred.

use tfwire::capture::Packet;
use tfwire::diagnose::{Engine, SignatureBook};
use tfwire::pipeline::{Analyzer, Config};
use tfwire::tfserving::Exchange;

use crate::support::{load, Owned};

/// Analyses packets[from..] with frame numbers kept as in the full file.
fn run_from(packets: &[Owned], from: usize) -> Vec<Exchange> {
    let mut raw = Vec::new();
    {
        let mut a = Analyzer::new(Config::default(), |ex: Exchange| {
            raw.push(ex);
            true
        });
        for (i, p) in packets.iter().enumerate().skip(from) {
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
    let mut engine = Engine::new(SignatureBook::new());
    let mut out = Vec::new();
    for ex in raw {
        engine.push(Box::new(ex), &mut |e| {
            out.push(*e);
            true
        });
    }
    engine.finish(&mut |e| {
        out.push(*e);
        true
    });
    out
}

#[test]
fn capture_starting_mid_connection_still_decodes_later_calls() {
    let packets = load("grpc_basic.pcapng");
    let full = run_from(&packets, 0);
    // Start inside the 602 KB resnet request (basic-005): the first bytes of
    // the client direction are the middle of a DATA frame.
    let big = full
        .iter()
        .find(|e| e.request_id.as_deref() == Some("basic-005"))
        .expect("basic-005");
    let start = big.request_frames[big.request_frames.len() / 2] as usize - 1;
    let cut = run_from(&packets, start);

    // Every call that started after the cut is decoded like in the full run.
    let after: Vec<&Exchange> = full
        .iter()
        .filter(|e| {
            e.request_frames
                .first()
                .is_some_and(|f| *f as usize > start + 1)
        })
        .collect();
    assert!(after.len() >= 25, "{}", after.len());
    let mut wrong = Vec::new();
    for f in &after {
        let Some(c) = cut.iter().find(|c| c.stream == f.stream) else {
            wrong.push(format!(
                "stream {:?} ({:?}) not decoded",
                f.stream, f.request_id
            ));
            continue;
        };
        let name = f.request_id.clone().unwrap_or_default();
        if c.method != f.method {
            wrong.push(format!("{name}: method {:?} vs {:?}", c.method, f.method));
        }
        if c.model != f.model || c.inputs.len() != f.inputs.len() {
            wrong.push(format!(
                "{name}: model/inputs {:?} {:?}",
                c.model,
                c.inputs.len()
            ));
        }
        for (a, b) in c.inputs.iter().zip(&f.inputs) {
            if (a.dtype, &a.shape, a.values) != (b.dtype, &b.shape, b.values) {
                wrong.push(format!("{name}: tensor {} differs", a.name));
            }
        }
        if c.status.grpc_code != f.status.grpc_code || c.status.message != f.status.message {
            wrong.push(format!("{name}: status {:?} vs {:?}", c.status, f.status));
        }
        let cat = |e: &Exchange| e.diagnosis.as_ref().map(|d| d.category);
        if cat(c) != cat(f) {
            wrong.push(format!("{name}: diagnosis {:?} vs {:?}", cat(c), cat(f)));
        }
        // What could not be seen is named, never guessed silently.
        if c.request_id.is_none() && f.request_id.is_some() && c.notes.is_empty() {
            wrong.push(format!("{name}: request id unknown but no note says why"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The interrupted resnet call is reported, incomplete and explained.
    let first = cut
        .iter()
        .find(|c| c.stream == big.stream)
        .expect("the call in flight");
    assert!(!first.notes.is_empty());
}

#[test]
fn capture_starting_at_a_frame_boundary_infers_methods() {
    let packets = load("grpc_basic.pcapng");
    let full = run_from(&packets, 0);
    let meta = full
        .iter()
        .find(|e| e.request_id.as_deref() == Some("basic-027"))
        .expect("basic-027");
    let start = meta.request_frames[0] as usize - 1;
    let cut = run_from(&packets, start);
    let c = cut
        .iter()
        .find(|c| c.stream == meta.stream)
        .expect("decoded");
    assert_eq!(c.method.as_deref(), Some("GetModelMetadata"));
    assert_eq!(c.model.as_deref(), Some("bert"));
    assert!(c.signatures.is_some(), "metadata response decoded");
}

/// A real capture started in the middle of a busy grpcio connection: HPACK
/// tables full of entries never seen, the client side starting inside a
/// 602 KB DATA frame. Every call after the start matches its ground truth and
/// diagnosis; what could not be seen is named in notes.
#[test]
fn real_mid_connection_capture_matches_ground_truth() {
    let ex = crate::rest::check("grpc_midconn.pcapng");
    let after: Vec<&Exchange> = ex
        .iter()
        .filter(|e| e.request_id.as_deref().is_some_and(|r| r >= "midconn-018"))
        .collect();
    assert_eq!(after.len(), 19);
    // :path was an unseen HPACK entry for most calls: the method is inferred,
    // and the exchange says so.
    let inferred = after
        .iter()
        .filter(|e| e.notes.iter().any(|n| n.contains("inferred")))
        .count();
    assert!(inferred >= 15, "{inferred}");
    // The four calls in flight at the start are reported, with what is missing.
    let in_flight: Vec<&Exchange> = ex
        .iter()
        .filter(|e| e.request_id.as_deref().is_none_or(|r| r < "midconn-018"))
        .collect();
    assert_eq!(in_flight.len(), 4);
    assert!(in_flight.iter().all(|e| !e.notes.is_empty()));
}

/// The same capture with two segments removed from inside one request's
/// DATA frame: only that call is incomplete.
#[test]
fn real_mid_connection_capture_with_loss() {
    let ex = crate::rest::check("grpc_midconn_lossy.pcap");
    let broken: Vec<&str> = ex
        .iter()
        .filter(|e| !e.complete && e.request_id.as_deref().is_some_and(|r| r >= "midconn-018"))
        .filter_map(|e| e.request_id.as_deref())
        .collect();
    assert_eq!(broken, vec!["midconn-025"]);
}
