//! Root-cause diagnoses on real captures.

use tfwire::diagnose::{Confidence, Engine, SignatureBook};
use tfwire::pipeline::Config;
use tfwire::tfserving::Exchange;

use crate::support::{analyze, fixture};

/// Runs the pipeline and the engine the way `tfwire analyze` does.
pub fn diagnosed(name: &str, book: SignatureBook) -> Vec<Exchange> {
    let mut engine = Engine::new(book);
    let mut out = Vec::new();
    for ex in analyze(&[fixture(name)], Config::default()) {
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

fn by_id<'a>(ex: &'a [Exchange], id: &str) -> &'a Exchange {
    ex.iter()
        .find(|e| e.request_id.as_deref() == Some(id))
        .unwrap_or_else(|| panic!("{id} not decoded"))
}

struct Want {
    id: &'static str,
    category: &'static str,
    input: Option<&'static str>,
    sent_dtype: Option<&'static str>,
    expected_dtype: Option<&'static str>,
    sent_shape: Option<&'static [i64]>,
    expected_shape: Option<&'static [i64]>,
}

const fn w(id: &'static str, category: &'static str) -> Want {
    Want {
        id,
        category,
        input: None,
        sent_dtype: None,
        expected_dtype: None,
        sent_shape: None,
        expected_shape: None,
    }
}

/// grpc_basic.pcapng: each failing call, what it really was (fixtures/README.md).
#[test]
fn every_failure_in_grpc_basic_gets_its_root_cause() {
    let ex = diagnosed("grpc_basic.pcapng", SignatureBook::new());
    let wants = [
        Want {
            input: Some("features"),
            sent_dtype: Some("DT_DOUBLE"),
            expected_dtype: Some("DT_FLOAT"),
            sent_shape: Some(&[1, 10]),
            ..w("basic-006", "dtype_mismatch")
        },
        Want {
            input: Some("attention_mask"),
            sent_dtype: Some("DT_INT64"),
            expected_dtype: Some("DT_INT32"),
            ..w("basic-007", "dtype_mismatch")
        },
        Want {
            input: Some("features"),
            sent_shape: Some(&[10]),
            expected_shape: Some(&[-1, 10]),
            ..w("basic-008", "missing_batch_dim")
        },
        Want {
            input: Some("features"),
            sent_shape: Some(&[1, 12]),
            expected_shape: Some(&[-1, 10]),
            ..w("basic-009", "shape_mismatch")
        },
        Want {
            input: Some("feature"),
            ..w("basic-010", "unknown_input_alias")
        },
        Want {
            input: Some("debug"),
            ..w("basic-011", "unknown_input_alias")
        },
        Want {
            input: Some("token_type_ids"),
            expected_dtype: Some("DT_INT32"),
            ..w("basic-012", "missing_input")
        },
        w("basic-013", "unknown_signature"),
        w("basic-014", "model_not_found"),
        w("basic-015", "version_not_found"),
        w("basic-017", "version_not_found"),
        Want {
            input: Some("score"),
            ..w("basic-018", "unknown_output_alias")
        },
        Want {
            input: Some("features"),
            sent_shape: Some(&[-1, 10]),
            ..w("basic-019", "malformed_tensor")
        },
        Want {
            input: Some("features"),
            ..w("basic-020", "malformed_tensor")
        },
        Want {
            input: Some("image"),
            sent_shape: Some(&[224, 224, 3]),
            expected_shape: Some(&[-1, 224, 224, 3]),
            ..w("basic-022", "missing_batch_dim")
        },
        w("basic-025", "model_not_found"),
        w("basic-028", "model_not_found"),
        w("basic-031", "model_not_found"),
        w("basic-032", "version_not_found"),
        w("basic-035", "wrong_signature_method"),
        w("basic-036", "unknown_signature"),
    ];
    let mut wrong = Vec::new();
    for want in &wants {
        let e = by_id(&ex, want.id);
        let Some(d) = &e.diagnosis else {
            wrong.push(format!("{}: no diagnosis", want.id));
            continue;
        };
        let got = (
            d.category,
            d.input.as_deref(),
            d.sent_dtype.as_deref(),
            d.expected_dtype.as_deref(),
        );
        let exp = (
            want.category,
            want.input.or(d.input.as_deref()),
            want.sent_dtype.or(d.sent_dtype.as_deref()),
            want.expected_dtype.or(d.expected_dtype.as_deref()),
        );
        if got != exp {
            wrong.push(format!("{}: expected {exp:?}\n      got {got:?}", want.id));
        }
        if let Some(s) = want.sent_shape {
            if d.sent_shape.as_deref() != Some(s) {
                wrong.push(format!("{}: sent_shape {:?}", want.id, d.sent_shape));
            }
        }
        if let Some(s) = want.expected_shape {
            if d.expected_shape.as_deref() != Some(s) {
                wrong.push(format!(
                    "{}: expected_shape {:?}",
                    want.id, d.expected_shape
                ));
            }
        }
        if d.summary.is_empty() || d.fix.is_empty() || d.evidence.is_empty() {
            wrong.push(format!("{}: summary/fix/evidence empty: {d:?}", want.id));
        }
        if !d.evidence.iter().any(|l| l.starts_with("server: ")) {
            wrong.push(format!(
                "{}: the server's message is not in the evidence",
                want.id
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));

    // The dtype error is certain: the server says double, the signature
    // (inferred from the two successful calls before it) says float.
    assert_eq!(
        by_id(&ex, "basic-006")
            .diagnosis
            .as_ref()
            .map(|d| d.confidence),
        Some(Confidence::Certain)
    );
    // The fix names the cast for the common client.
    assert!(by_id(&ex, "basic-006")
        .diagnosis
        .as_ref()
        .is_some_and(|d| d.fix.contains("np.float32")));
    assert!(by_id(&ex, "basic-010")
        .diagnosis
        .as_ref()
        .is_some_and(|d| d.summary.contains("did you mean 'features'")));
}

#[test]
fn successes_get_no_diagnosis_and_silent_padding_gets_a_warning() {
    let ex = diagnosed("grpc_basic.pcapng", SignatureBook::new());
    for e in ex.iter().filter(|e| e.status.ok) {
        assert!(e.diagnosis.is_none(), "{:?} got a diagnosis", e.request_id);
    }
    for e in ex.iter().filter(|e| !e.status.ok) {
        assert!(e.diagnosis.is_some(), "{:?} has none", e.request_id);
    }
    let padded = by_id(&ex, "basic-021");
    assert_eq!(padded.warnings.len(), 1, "{:?}", padded.warnings);
    assert!(
        padded.warnings[0].contains("repeated the last value"),
        "{:?}",
        padded.warnings
    );
    assert!(by_id(&ex, "basic-001").warnings.is_empty());
}

#[test]
fn dtype_arg_index_names_the_first_sorted_input() {
    // All three bert inputs were int64; TF reports arg[0], the first feed in
    // sorted order, and the others are named too.
    let ex = diagnosed("grpc_basic.pcapng", SignatureBook::new());
    let d = by_id(&ex, "basic-007")
        .diagnosis
        .clone()
        .expect("diagnosis");
    assert_eq!(d.input.as_deref(), Some("attention_mask"));
    assert!(d.summary.contains("also sent as int64"), "{}", d.summary);
}

#[test]
fn concurrent_failures_group_into_few_root_causes() {
    let ex = diagnosed("grpc_concurrent.pcapng", SignatureBook::new());
    let mut s = tfwire::report::Summary::new();
    for e in &ex {
        s.add(e);
    }
    s.finish();
    assert_eq!(s.failures, 20);
    assert!(s.root_causes.len() <= 4, "{:#?}", s.root_causes);
    assert!(s.root_causes.iter().all(|r| r.category != "undiagnosed"));
    let total: u64 = s.root_causes.iter().map(|r| r.count).sum();
    assert_eq!(total, 20);
}

/// Compares each exchange's diagnosis with the `expect` object its
/// generator wrote (category, input, dtypes, shapes; nulls included).
fn check_expectations(capture: &str, book: SignatureBook) -> Vec<Exchange> {
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{capture}.truth.json"))).expect("truth"),
    )
    .expect("truth json");
    let ex = diagnosed(capture, book);
    let mut wrong = Vec::new();
    for t in truth["exchanges"].as_array().expect("exchanges") {
        let id = t["request_id"].as_str().unwrap_or("?");
        let Some(e) = ex.iter().find(|e| e.request_id.as_deref() == Some(id)) else {
            wrong.push(format!("{id}: not decoded"));
            continue;
        };
        match (&t["expect"], &e.diagnosis) {
            (serde_json::Value::Null, None) => {}
            (serde_json::Value::Null, Some(d)) => {
                wrong.push(format!("{id}: unexpected {}", d.category))
            }
            (_, None) => wrong.push(format!("{id}: no diagnosis")),
            (want, Some(d)) => {
                let got = serde_json::to_value(d).expect("serialize");
                for (k, v) in want.as_object().expect("expect object") {
                    let g = got.get(k).cloned().unwrap_or(serde_json::Value::Null);
                    if &g != v {
                        wrong.push(format!("{id}.{k}: expected {v} got {g}  ({})", d.summary));
                    }
                }
            }
        }
        if t["warning"] == true && e.warnings.is_empty() {
            wrong.push(format!("{id}: expected a warning"));
        }
    }
    assert!(wrong.is_empty(), "{capture}:\n{}", wrong.join("\n"));
    ex
}

/// Every category triggered by a real request, with no GetModelMetadata in
/// the capture: signatures come from the successful calls before them.
#[test]
fn grpc_diagnosis_capture_from_traffic_alone() {
    let ex = check_expectations("grpc_diagnosis.pcapng", SignatureBook::new());
    let d = by_id(&ex, "diag-017").diagnosis.clone().expect("diagnosis");
    assert!(d.confidence >= Confidence::Likely, "{d:?}");
}

/// The same capture with the SavedModels as reference: the diagnoses do not
/// change, the signature evidence names the SavedModel, and dtype errors
/// map `arg[i]` through the real feed names, so they are certain.
#[test]
fn grpc_diagnosis_capture_with_model_dir() {
    let book = tfwire::load_book(
        &[
            fixture("models").join("fraud").display().to_string(),
            fixture("models").join("bert").display().to_string(),
            fixture("models").join("resnet").display().to_string(),
        ],
        &[],
    )
    .expect("model dirs load");
    let ex = check_expectations("grpc_diagnosis.pcapng", book);
    let d = by_id(&ex, "diag-017").diagnosis.clone().expect("diagnosis");
    assert_eq!(d.input.as_deref(), Some("token_type_ids"));
    assert_eq!(d.confidence, Confidence::Certain);
    assert!(
        d.evidence.iter().any(|e| e.contains("saved_model.pb")),
        "{:?}",
        d.evidence
    );
}

/// `--signatures` (the REST metadata JSON) works as a reference too.
#[test]
fn grpc_diagnosis_capture_with_signature_files() {
    let files: Vec<std::path::PathBuf> = ["fraud", "bert", "resnet"]
        .iter()
        .map(|m| fixture("models").join(format!("{m}.signatures.json")))
        .collect();
    let book = tfwire::load_book(&[], &files).expect("signature files load");
    check_expectations("grpc_diagnosis.pcapng", book);
}
