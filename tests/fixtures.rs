//! Every committed fixture against the ground truth its generator wrote.

use serde_json::{json, Value};

use crate::support::{analyze, fixture};
use tfwire::pipeline::Config;

/// The fields of a tensor that the ground truth records.
fn tensor_view(v: &Value) -> Value {
    json!({
        "name": v["name"], "dtype": v["dtype"], "shape": v["shape"],
        "values": v["values"], "encoding": v["encoding"],
    })
}

fn check_fixture(capture: &str) -> usize {
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{capture}.truth.json"))).expect("truth file"),
    )
    .expect("truth json");
    let exchanges = analyze(&[fixture(capture)], Config::default());
    let want = truth["exchanges"].as_array().expect("exchanges");
    assert_eq!(
        exchanges.len(),
        want.len(),
        "{capture}: decoded {} exchanges, truth has {}",
        exchanges.len(),
        want.len()
    );
    let mut mismatches = Vec::new();
    for t in want {
        let id = t["request_id"].as_str().expect("request_id");
        let Some(ex) = exchanges
            .iter()
            .find(|e| e.request_id.as_deref() == Some(id))
        else {
            mismatches.push(format!("{id}: not decoded"));
            continue;
        };
        let got = serde_json::to_value(ex).expect("serialize");
        for key in [
            "transport",
            "method",
            "path",
            "model",
            "version",
            "version_label",
            "signature",
        ] {
            if got[key] != t[key] {
                mismatches.push(format!("{id}.{key}: expected {} got {}", t[key], got[key]));
            }
        }
        let examples = got.get("examples").cloned().unwrap_or(Value::Null);
        if examples != t["examples"] {
            mismatches.push(format!(
                "{id}.examples: expected {} got {examples}",
                t["examples"]
            ));
        }
        for side in ["inputs", "outputs"] {
            let g: Vec<Value> = got[side]
                .as_array()
                .expect(side)
                .iter()
                .map(tensor_view)
                .collect();
            let w: Vec<Value> = t[side]
                .as_array()
                .expect(side)
                .iter()
                .map(tensor_view)
                .collect();
            if g != w {
                mismatches.push(format!(
                    "{id}.{side}:\n  expected {}\n  got      {}",
                    Value::from(w),
                    Value::from(g)
                ));
            }
        }
        for key in ["ok", "grpc_code", "grpc_status", "message"] {
            if got["status"][key] != t["status"][key] {
                mismatches.push(format!(
                    "{id}.status.{key}: expected {} got {}",
                    t["status"][key], got["status"][key]
                ));
            }
        }
        if !ex.complete {
            mismatches.push(format!("{id}: marked incomplete: {:?}", ex.notes));
        }
        if ex.request_frames.is_empty() || ex.response_frames.is_empty() {
            mismatches.push(format!("{id}: frame numbers missing"));
        }
        if ex.status.ok && ex.latency_ms.is_none() {
            mismatches.push(format!("{id}: no latency"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{capture}:\n{}",
        mismatches.join("\n")
    );
    want.len()
}

#[test]
fn grpc_basic_matches_ground_truth() {
    assert!(check_fixture("grpc_basic.pcapng") >= 30);
}

#[test]
fn grpc_ipv6_sll2_nanosecond_pcap_matches_ground_truth() {
    check_fixture("grpc_ipv6_sll2.pcap");
}

#[test]
fn grpc_compressed_matches_ground_truth() {
    check_fixture("grpc_compressed.pcap");
}

#[test]
fn grpc_concurrent_streams_match_ground_truth() {
    assert!(check_fixture("grpc_concurrent.pcapng") >= 64);
}

#[test]
fn grpc_large_tensor_matches_ground_truth() {
    check_fixture("grpc_large.pcapng");
}

#[test]
fn exchanges_carry_endpoints_and_wireshark_filters() {
    let ex = analyze(&[fixture("grpc_ipv6_sll2.pcap")], Config::default());
    let first = &ex[0];
    assert!(first.client.starts_with("[::1]:"), "{}", first.client);
    assert_eq!(first.server, "[::1]:8500");
    assert_eq!(
        first.wireshark_filter,
        format!(
            "tcp.stream eq {} && http2.streamid eq {}",
            first.connection,
            first.stream.unwrap_or(0)
        )
    );
    // Nanosecond pcap: the start time keeps all nine digits.
    let start = first.start.as_deref().unwrap_or("");
    assert_eq!(
        start.len(),
        "2026-11-27T15:19:14.819078439Z".len(),
        "{start}"
    );
}

#[test]
fn grpc_diagnosis_matches_ground_truth() {
    assert!(check_fixture("grpc_diagnosis.pcapng") >= 30);
}

/// fixtures/README.md lists every committed capture with the script that
/// regenerates it, and that script exists.
#[test]
fn readme_lists_every_capture_and_its_generator() {
    let readme = std::fs::read_to_string(fixture("README.md")).expect("fixtures/README.md");
    let dir = std::fs::read_dir(fixture("")).expect("fixtures/");
    let mut captures = 0;
    for entry in dir {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !(name.ends_with(".pcap") || name.ends_with(".pcapng")) {
            continue;
        }
        captures += 1;
        let row = format!("| `{name}` | `gen/");
        let line = readme
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("{name} is not in the fixtures/README.md overview table"));
        let script = line[row.len()..].split('`').next().unwrap_or("");
        assert!(
            fixture("gen").join(script).is_file(),
            "{name}: generator gen/{script} does not exist"
        );
    }
    assert!(
        readme.contains(&format!("There are {captures} capture fixtures")),
        "the fixtures/README.md count is not {captures}"
    );
}
