//! REST (HTTP/1.1 + JSON) exchanges and protocol mismatches, from real
//! `requests` and curl traffic against a server that answers like TF
//! Serving's REST API.

use serde_json::{json, Value};

use crate::diagnose::diagnosed;
use crate::support::fixture;
use tfwire::diagnose::SignatureBook;
use tfwire::report::Summary;

fn tensor_view(v: &Value) -> Value {
    json!({"name": v["name"], "dtype": v["dtype"], "shape": v["shape"], "values": v["values"]})
}

/// Every exchange of a capture against its ground truth and `expect`.
pub fn check(capture: &str) -> Vec<tfwire::tfserving::Exchange> {
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{capture}.truth.json"))).expect("truth"),
    )
    .expect("truth json");
    let ex = diagnosed(capture, SignatureBook::new());
    let want = truth["exchanges"].as_array().expect("exchanges");
    // Calls in flight when a capture started are reported too, beyond the truth list.
    let in_flight = truth["in_flight_at_start"].as_array().map_or(0, Vec::len);
    assert_eq!(
        ex.len(),
        want.len() + in_flight,
        "{capture}: exchange count"
    );
    let mut wrong = Vec::new();
    for t in want {
        let id = t["request_id"].as_str().unwrap_or("?");
        let Some(e) = ex.iter().find(|e| e.request_id.as_deref() == Some(id)) else {
            wrong.push(format!("{id}: not decoded"));
            continue;
        };
        let got = serde_json::to_value(e).expect("serialize");
        for key in [
            "transport",
            "method",
            "model",
            "version",
            "version_label",
            "signature",
        ] {
            if t.get(key).is_some() && got[key] != t[key] {
                wrong.push(format!("{id}.{key}: expected {} got {}", t[key], got[key]));
            }
        }
        for side in ["inputs", "outputs"] {
            if let Some(w) = t.get(side).and_then(Value::as_array) {
                let g: Vec<Value> = got[side]
                    .as_array()
                    .expect(side)
                    .iter()
                    .map(tensor_view)
                    .collect();
                let w: Vec<Value> = w.iter().map(tensor_view).collect();
                if g != w {
                    wrong.push(format!(
                        "{id}.{side}:\n  expected {}\n  got      {}",
                        Value::from(w),
                        Value::from(g)
                    ));
                }
            }
        }
        for key in ["ok", "http_status", "grpc_code", "message"] {
            if let Some(v) = t["status"].get(key) {
                if &got["status"][key] != v {
                    wrong.push(format!(
                        "{id}.status.{key}: expected {v} got {}",
                        got["status"][key]
                    ));
                }
            }
        }
        match (&t["expect"], &e.diagnosis) {
            (Value::Null, None) => {}
            (Value::Null, Some(d)) => wrong.push(format!("{id}: unexpected {}", d.category)),
            (_, None) => wrong.push(format!("{id}: no diagnosis")),
            (want, Some(d)) => {
                let g = serde_json::to_value(d).expect("serialize");
                for (k, v) in want.as_object().expect("expect") {
                    if g.get(k).unwrap_or(&Value::Null) != v {
                        wrong.push(format!(
                            "{id}.diagnosis.{k}: expected {v} got {}  ({})",
                            g[k], d.summary
                        ));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{capture}:\n{}", wrong.join("\n"));
    ex
}

#[test]
fn rest_basic_matches_ground_truth_and_diagnoses() {
    let ex = check("rest_basic.pcapng");
    assert!(ex.len() >= 45);
    // Keep-alive, pipelining, chunked, gzip, 100-continue and close-delimited
    // bodies are all in this capture and decoded above; spot-check two.
    let malformed = ex
        .iter()
        .find(|e| {
            e.diagnosis
                .as_ref()
                .is_some_and(|d| d.category == "malformed_json")
        })
        .expect("a malformed JSON body");
    assert!(malformed
        .diagnosis
        .as_ref()
        .is_some_and(|d| d.summary.contains("at byte")));
    assert!(ex
        .iter()
        .all(|e| e.transport == tfwire::tfserving::Transport::Rest));
}

#[test]
fn mixed_grpc_and_rest_in_one_run_share_root_causes() {
    let ex = check("mixed_grpc_rest.pcapng");
    let mut s = Summary::new();
    for e in &ex {
        s.add(e);
    }
    s.finish();
    // The unknown model fails on both transports: one cause, two failures.
    let nf = s
        .root_causes
        .iter()
        .find(|r| r.category == "model_not_found")
        .expect("model_not_found group");
    assert_eq!(nf.count, 2, "{:#?}", s.root_causes);
    let shape = s
        .root_causes
        .iter()
        .find(|r| r.category == "shape_mismatch")
        .expect("shape_mismatch group");
    assert_eq!(shape.count, 2, "{:#?}", s.root_causes);
}

#[test]
fn protocol_mismatches_are_caught_on_every_connection() {
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("protocol_mismatch.pcapng.truth.json")).expect("truth"),
    )
    .expect("json");
    let ex = diagnosed("protocol_mismatch.pcapng", SignatureBook::new());
    for c in truth["connections"].as_array().expect("connections") {
        let id = c["request_id"].as_str().unwrap_or("?");
        let streams: Vec<u64> = c["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .filter_map(|x| x["tcp_stream"].as_u64())
            .collect();
        let got: Vec<_> = ex
            .iter()
            .filter(|e| streams.contains(&e.connection))
            .collect();
        match c["expect"]["category"].as_str() {
            Some(cat) => {
                assert!(!got.is_empty(), "{id}: nothing reported");
                for e in &got {
                    let d = e.diagnosis.as_ref().expect("diagnosis");
                    assert_eq!(d.category, cat, "{id}: {}", d.summary);
                    assert!(!d.fix.is_empty());
                }
            }
            // The control connection (TLS to the TLS port) is not a failure.
            None => assert!(got.is_empty(), "{id}: {got:?}"),
        }
    }
}
