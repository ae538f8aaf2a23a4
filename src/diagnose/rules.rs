//! Rules: the server's message, the request's tensors and the model's
//! signature, combined into one root cause with evidence and a fix.

use super::book::{Entry, SignatureBook};
use super::message::{self, Finding};
use super::{Confidence, Diagnosis};
use crate::tfserving::dtype::{self, shape_string};
use crate::tfserving::names::ByName;
use crate::tfserving::{Exchange, TensorSpec, TensorSummary, Transport, ValueEncoding};

/// Facts about one failed exchange that every rule may use.
struct Ctx<'a> {
    ex: &'a Exchange,
    entry: Option<&'a Entry>,
    book: &'a SignatureBook,
    server: Option<String>,
    node: Option<String>,
}

impl<'a> Ctx<'a> {
    fn input(&self, alias: &str) -> Option<&'a TensorSummary> {
        self.ex.inputs.iter().find(|t| t.name == alias)
    }

    fn spec(&self, alias: &str) -> Option<&'a TensorSpec> {
        self.entry.and_then(|e| e.signature.input(alias))
    }

    fn model(&self) -> &str {
        self.ex.model.as_deref().unwrap_or("?")
    }

    fn signature(&self) -> &str {
        self.ex.signature.as_deref().unwrap_or("serving_default")
    }

    /// Evidence lines: the server's words, the signature's source, the request.
    fn evidence(&self, with_signature: bool, inputs: &[&str]) -> Vec<String> {
        let mut ev = Vec::new();
        if let Some(m) = &self.server {
            ev.push(["server: ", m].concat());
        }
        if let Some(n) = &self.node {
            ev.push(text!("raised by graph node {n}"));
        }
        if with_signature {
            if let Some(e) = self.entry {
                ev.push(e.source.describe());
            }
        }
        for alias in inputs {
            if let Some(t) = self.input(alias) {
                ev.push(text!("request: {}", describe_tensor(t)));
            }
        }
        ev
    }

    fn confidence(&self, server_backs: bool, signature_backs: bool) -> Confidence {
        match (server_backs, signature_backs && self.entry.is_some()) {
            (true, true) => Confidence::Certain,
            (true, false) | (false, true) => Confidence::Likely,
            (false, false) => Confidence::Possible,
        }
    }

    /// A diagnosis the server's message alone settles.
    fn certain(&self, category: &'static str, summary: String, fix: String) -> Diagnosis {
        let mut d = self.diag(category, summary, fix);
        d.evidence = self.evidence(false, &[]);
        d.confidence = Confidence::Certain;
        d
    }

    fn diag(&self, category: &'static str, summary: String, fix: String) -> Diagnosis {
        Diagnosis {
            category,
            input: None,
            sent_dtype: None,
            expected_dtype: None,
            sent_shape: None,
            expected_shape: None,
            summary,
            fix,
            evidence: Vec::new(),
            confidence: Confidence::Possible,
        }
    }
}

fn describe_tensor(t: &TensorSummary) -> String {
    // Written piece by piece: one of these is in the evidence of most failures.
    let mut s = String::with_capacity(128);
    s.push_str(&t.name);
    s.push(' ');
    s.push_str(t.dtype.unwrap_or("DT_?"));
    s.push(' ');
    match t.shape.as_deref() {
        Some(dims) => dtype::push_shape(&mut s, dims),
        None => s.push_str("<unknown>"),
    }
    s.push_str(" (");
    let join = |s: &mut String, parts: &[&str], sep: char| {
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                s.push(sep);
            }
            s.push_str(p);
        }
    };
    match t.encoding {
        ValueEncoding::TensorContent => s.push_str("tensor_content"),
        ValueEncoding::Typed => join(&mut s, &t.fields, '+'),
        ValueEncoding::Empty => s.push_str("no values"),
        ValueEncoding::Json => {
            s.push_str("JSON ");
            join(&mut s, t.json.as_deref().unwrap_or(&[]), '/');
        }
    }
    s.push_str(", ");
    match t.values {
        Some(v) => s.push_str(itoa::Buffer::new().format(v)),
        None => s.push('?'),
    }
    s.push_str(" values)");
    s
}

/// `float64 (DT_DOUBLE)` for humans.
fn dtype_words(dt: &str) -> String {
    match dtype::code(dt).and_then(dtype::numpy) {
        Some(np) if np != "object" => [np, " (", dt, ")"].concat(),
        _ => dt.to_string(),
    }
}

/// The Python spelling: `tf.float32`, `tf.string`.
fn tf_py_name(dt: &str) -> String {
    match dtype::code(dt) {
        Some(dtype::DT_STRING) => "tf.string".to_string(),
        Some(code) => dtype::numpy(code)
            .or_else(|| dtype::tf_string(code))
            .map(|s| text!("tf.{s}"))
            .unwrap_or_else(|| dt.to_string()),
        None => dt.to_string(),
    }
}

/// The dtype JSON values denote when no signature types them (DESIGN.md §3).
fn json_denoted(kinds: &[&str]) -> Option<&'static str> {
    if kinds.iter().any(|k| *k == "string" || *k == "b64") {
        Some("DT_STRING")
    } else if kinds.contains(&"float") {
        Some("DT_DOUBLE")
    } else if kinds.contains(&"int") {
        Some("DT_INT64")
    } else if kinds.contains(&"bool") {
        Some("DT_BOOL")
    } else {
        None
    }
}

/// Edit distance between `a` and `b` if it is at most `max`. Names come
/// from the capture (a model name may be thousands of characters), so the
/// lengths are compared first and the rows stop once every entry is past
/// `max`.
fn levenshtein_within(a: &[char], b: &[char], max: usize) -> Option<usize> {
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        let mut row_min = cur[0];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
            row_min = row_min.min(cur[j + 1]);
        }
        if row_min > max {
            return None;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    Some(prev[b.len()]).filter(|&d| d <= max)
}

/// The closest candidate within a plausible typo distance.
fn did_you_mean<'c>(name: &str, candidates: &'c [String]) -> Option<&'c str> {
    let lower: Vec<char> = name.to_lowercase().chars().collect();
    candidates
        .iter()
        .filter_map(|c| {
            let max = (c.len().max(name.len()) / 3).max(2);
            let other: Vec<char> = c.to_lowercase().chars().collect();
            levenshtein_within(&lower, &other, max).map(|d| (d, c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

/// Diagnoses a failed exchange.
pub fn diagnose(ex: &Exchange, book: &SignatureBook) -> Diagnosis {
    let parsed = ex.status.message.as_deref().map(message::Parsed::of);
    diagnose_parsed(ex, book, parsed.as_ref())
}

/// [`diagnose`] with the server's message already parsed (`None`: no message).
pub fn diagnose_parsed(
    ex: &Exchange,
    book: &SignatureBook,
    parsed: Option<&message::Parsed>,
) -> Diagnosis {
    let entry = ex.model.as_deref().and_then(|m| {
        book.lookup(
            m,
            ex.version,
            ex.signature.as_deref().unwrap_or("serving_default"),
        )
    });
    let core = parsed.map(|p| &p.core);
    let finding = parsed.map_or(Finding::Other, |p| p.finding.clone());
    let ctx = Ctx {
        ex,
        entry,
        book,
        server: core.as_ref().map(|c| {
            let mut s = c.text.clone();
            if c.truncated {
                s.push_str(" …(truncated by the server)");
            }
            s
        }),
        node: core.as_ref().and_then(|c| c.node.clone()),
    };
    if let Some(p) = &ex.protocol_problem {
        let mut d = ctx.diag(
            "protocol_mismatch",
            p.clone(),
            match ex.transport {
                Transport::Grpc => "send gRPC (HTTP/2, protobuf) to the gRPC port (default 8500) with a plaintext channel unless the server has TLS; JSON goes to the REST port (default 8501)".into(),
                Transport::Rest => "send REST (HTTP/1.1, JSON) to the REST port (default 8501, --rest_api_port); gRPC clients go to the gRPC port (default 8500)".into(),
            },
        );
        d.evidence = ctx.evidence(false, &[]);
        d.evidence.push(text!("tfwire: {p}"));
        d.confidence = if ex.protocol_problem_certain {
            Confidence::Certain
        } else {
            Confidence::Possible
        };
        return d;
    }
    from_finding(&ctx, finding).unwrap_or_else(|| fallback(&ctx))
}

fn from_finding(c: &Ctx<'_>, f: Finding) -> Option<Diagnosis> {
    Some(match f {
        Finding::DtypeArg { index, want, got } => dtype_arg(c, index, &want, &got),
        Finding::DtypeAlias { alias, want, got } => {
            let want = dtype::from_tf_string(&want)
                .and_then(dtype::name)
                .unwrap_or("DT_?");
            let got = dtype::from_tf_string(&got)
                .and_then(dtype::name)
                .unwrap_or("DT_?");
            dtype_mismatch(
                c,
                &alias,
                got,
                want,
                c.confidence(true, c.spec(&alias).is_some()),
            )
        }
        Finding::InputSet {
            sent,
            expected,
            extra,
            missing,
        } => {
            let sent = if sent.is_empty() {
                c.ex.inputs.iter().map(|t| t.name.clone()).collect()
            } else {
                sent
            };
            input_set(c, &sent, &expected, &extra, &missing)
        }
        Finding::AliasMissing { alias, sent, .. } => {
            let sent: Vec<String> = if sent.is_empty() {
                c.ex.inputs.iter().map(|t| t.name.clone()).collect()
            } else {
                sent
            };
            let expected: Vec<String> = match c.entry {
                Some(e) => e.signature.inputs.iter().map(|s| s.alias.clone()).collect(),
                None => vec![alias.clone()],
            };
            let extra: Vec<String> = sent
                .iter()
                .filter(|s| !expected.contains(s))
                .cloned()
                .collect();
            // A sent alias close to the missing one is the classic typo.
            if let Some(unknown) = extra
                .iter()
                .find(|e| did_you_mean(e, std::slice::from_ref(&alias)).is_some())
            {
                unknown_alias(c, unknown, std::slice::from_ref(&alias), &expected)
            } else {
                missing_input(c, &alias, &expected)
            }
        }
        Finding::AliasUnknown { alias, expected } => {
            let sent = ByName::new(&c.ex.inputs, |t| t.name.as_str());
            let missing: Vec<String> = expected
                .iter()
                .filter(|e| !sent.contains(e))
                .cloned()
                .collect();
            unknown_alias(c, &alias, &missing, &expected)
        }
        Finding::TensorParsing { alias } => malformed(c, &alias),
        Finding::OutputAliasUnknown { alias, expected } => {
            let mut d = c.diag(
                "unknown_output_alias",
                text!(
                    "output_filter names '{alias}', which is not an output of {}/{} (outputs: {})",
                    c.model(),
                    c.signature(),
                    list(&expected)
                ),
                match did_you_mean(&alias, &expected) {
                    Some(m) => text!("request output '{m}' instead of '{alias}' in output_filter, or leave output_filter empty for all outputs"),
                    None => text!("remove '{alias}' from output_filter; valid outputs: {}", list(&expected)),
                },
            );
            d.input = Some(alias);
            d.evidence = c.evidence(false, &[]);
            d.confidence = c.confidence(true, false);
            d
        }
        Finding::DuplicateOutputAlias { alias } => {
            let mut d = c.diag(
                "unknown_output_alias",
                text!("output_filter lists '{alias}' more than once"),
                text!("list '{alias}' once in output_filter"),
            );
            d.input = Some(alias);
            d.evidence = c.evidence(false, &[]);
            d.confidence = Confidence::Certain;
            d
        }
        Finding::SignatureNotFound { signature } => unknown_signature(c, &signature),
        Finding::WrongSignatureMethod { expected, was } => {
            c.certain(
                "wrong_signature_method",
                text!(
                    "{} was called on signature '{}' of model '{}', whose method is {was}; {} needs a signature with method {expected}",
                    c.ex.method.as_deref().unwrap_or("the call"),
                    c.signature(),
                    c.model(),
                    c.ex.method.as_deref().unwrap_or("this call"),
                ),
                if was.ends_with("/predict") {
                    text!("call Predict for signature '{}', or name a signature exported with method {expected}", c.signature())
                } else {
                    text!("name a signature exported with method {expected}")
                },
            )
        }
        Finding::ServableNotFound { model, version } => not_found(c, &model, version),
        Finding::VersionLabelUnknown { label } => {
            let versions = c.book.versions(c.model());
            c.certain(
                "version_not_found",
                text!("version label '{label}' is not assigned on the server for model '{}'", c.model()),
                text!(
                    "use a label defined in the server's model config (version_labels), or request a version number{}",
                    if versions.is_empty() { String::new() } else { text!(" (versions seen: {})", join_i64(&versions)) }
                ),
            )
        }
        Finding::VersionLabelsNotAllowed => {
            c.certain(
                "version_not_found",
                "the request names a version label, and this server does not accept labels for it".into(),
                "request a version number, or enable labels on the server (--allow_version_labels_for_unavailable_models / model config version_labels)".into(),
            )
        }
        Finding::MissingModelSpec => {
            c.certain(
                "other",
                "the request has no model_spec or no model name".into(),
                "set model_spec.name (request.model_spec.name = 'my_model')".into(),
            )
        }
        Finding::MatrixIncompatible { in0, in1 } => shape_error(c, ShapeHint::Matrix { in0, in1 }),
        Finding::NotAMatrix { shape } => shape_error(
            c,
            ShapeHint::RankLow {
                shape,
                want_rank: 2,
            },
        ),
        Finding::DifferentRanks { a, b } => shape_error(
            c,
            ShapeHint::RankLow {
                want_rank: b.len(),
                shape: a,
            },
        ),
        Finding::RankRequired { rank, shape } => shape_error(
            c,
            ShapeHint::RankLow {
                shape,
                want_rank: rank as usize,
            },
        ),
        Finding::IncompatibleShapes { .. } | Finding::Reshape { .. } => {
            shape_error(c, ShapeHint::None)
        }
        Finding::BatchSizesDiffer => batch_sizes(c).unwrap_or_else(|| {
            let mut d = c.diag(
                "batch_size_mismatch",
                "the inputs have different sizes in dimension 0 (batch)".into(),
                "send every input with the same number of rows".into(),
            );
            d.evidence = c.evidence(false, &[]);
            d.confidence = Confidence::Likely;
            d
        }),
        Finding::BatchingNeedsDimension => {
            let scalar =
                c.ex.inputs
                    .iter()
                    .find(|t| t.shape.as_ref().is_some_and(Vec::is_empty));
            let mut d = c.diag(
                "missing_batch_dim",
                text!(
                    "input '{}' was sent as a scalar; with batching enabled every input needs a batch dimension",
                    scalar.map(|t| t.name.as_str()).unwrap_or("?")
                ),
                "send the value as a one-row batch, e.g. shape [1] instead of []".into(),
            );
            d.input = scalar.map(|t| t.name.clone());
            d.sent_shape = scalar.and_then(|t| t.shape.clone());
            d.evidence = c.evidence(false, &[]);
            d.confidence = c.confidence(true, scalar.is_some());
            d
        }
        Finding::BatchTooLarge { size, max } => {
            c.certain(
                "batch_size_mismatch",
                text!("the request holds {size} rows; the server's batching allows at most {max}"),
                text!("split the request into batches of at most {max} rows, or raise max_batch_size in the batching config"),
            )
        }
        Finding::QueueFull => {
            c.certain(
                "server_error",
                "the server's batch queue was full (overload), not a problem with this request"
                    .into(),
                "retry with backoff; on the server, raise max_enqueued_batches or add capacity"
                    .into(),
            )
        }
        Finding::MessageTooLarge { size, max } => {
            c.certain(
                "message_too_large",
                text!("a message of {size} bytes exceeds the receiver's limit of {max} bytes"),
                text!("send smaller batches, or raise the limit on the receiving side (grpc.max_receive_message_length > {size})"),
            )
        }
        Finding::IndexOutOfRange {
            index,
            value,
            limit,
        } => {
            let ints: Vec<&TensorSummary> =
                c.ex.inputs
                    .iter()
                    .filter(|t| t.dtype.is_some_and(|d| d.contains("INT")))
                    .collect();
            let mut d = c.diag(
                "other",
                text!(
                    "a value in the request is out of range: index{index} = {value}, but the lookup table has {limit} entries{}",
                    if ints.len() == 1 { text!(" (integer input '{}')", ints[0].name) } else { String::new() }
                ),
                text!("keep ids in [0, {limit}): check the tokenizer/vocabulary the client uses matches the model's"),
            );
            d.input = (ints.len() == 1).then(|| ints[0].name.clone());
            d.evidence = c.evidence(false, &[]);
            d.confidence = Confidence::Likely;
            d
        }
        Finding::Placeholder { name } => {
            let mut d = c.diag(
                "missing_input",
                text!("the graph needs placeholder '{name}', which no input of the request feeds"),
                "send every input the signature lists; the model's export may be missing this input from its signature".into(),
            );
            d.input = Some(name);
            d.evidence = c.evidence(true, &[]);
            d.confidence = Confidence::Likely;
            d
        }
        Finding::JsonParse { detail, offset } => {
            c.certain(
                "malformed_json",
                text!(
                    "the request body is not valid JSON: {detail}{}",
                    offset.map(|o| text!(" (at byte {o})")).unwrap_or_default()
                ),
                "serialise the body with a JSON library (json.dumps) instead of building it by hand".into(),
            )
        }
        Finding::JsonType {
            value,
            json_type,
            dtype: want,
        } => {
            let want_dt = dtype::from_tf_string(&want)
                .and_then(dtype::name)
                .unwrap_or("DT_?");
            // The input holding a value of the offending JSON type.
            let kind = match json_type.as_str() {
                "String" => "string",
                "Object" if value.contains("\"b64\"") => "b64",
                "Object" => "object",
                "True" | "False" => "bool",
                "Number" if value.contains('.') || value.contains('e') => "float",
                "Number" => "int",
                "Null" => "null",
                _ => "",
            };
            let holder = c.ex.inputs.iter().find(|t| {
                t.json.as_deref().is_some_and(|k| k.contains(&kind))
                    && c.spec(&t.name)
                        .is_none_or(|s| s.dtype.as_deref() == Some(want_dt))
            });
            let sent_dt = match json_type.as_str() {
                "String" | "Object" => "DT_STRING",
                "True" | "False" => "DT_BOOL",
                "Number" if value.contains('.') || value.contains('e') => "DT_DOUBLE",
                "Number" => "DT_INT64",
                _ => "DT_INVALID",
            };
            let mut d = c.diag(
                "dtype_mismatch",
                text!(
                    "{}the JSON value {value} ({json_type}) cannot be converted to {want}, the input's dtype",
                    holder.map(|t| text!("input '{}': ", t.name)).unwrap_or_default()
                ),
                match json_type.as_str() {
                    "Object" => text!("send plain numbers for a {want} input; {{\"b64\": …}} is only for string inputs"),
                    "String" => text!("send numbers, not strings, for a {want} input"),
                    _ => text!("send values of type {want}"),
                },
            );
            d.sent_dtype = Some(sent_dt.into());
            d.expected_dtype = Some(want_dt.into());
            if let Some(t) = holder {
                d.input = Some(t.name.clone()).filter(|n| !n.is_empty());
                d.sent_shape = t.shape.clone();
                d.expected_shape = c.spec(&t.name).and_then(|s| s.shape.clone());
            }
            let names: Vec<&str> = holder.map(|t| vec![t.name.as_str()]).unwrap_or_default();
            d.evidence = c.evidence(true, &names);
            d.confidence = Confidence::Certain;
            d
        }
        Finding::RaggedRows { expected, got } => {
            let ragged =
                c.ex.inputs
                    .iter()
                    .find(|t| t.problems.iter().any(|p| p.starts_with("ragged")));
            let mut d = c.diag(
                "ragged_instances",
                text!(
                    "the rows of 'instances' differ in size{}: one has {got} values where {expected} were expected",
                    ragged.map(|t| text!(" for input '{}'", t.name)).unwrap_or_default()
                ),
                "pad or truncate every row to the same length, or send each input in columnar form ('inputs')".into(),
            );
            if let Some(t) = ragged {
                d.input = Some(t.name.clone()).filter(|n| !n.is_empty());
                d.sent_dtype = t.dtype.map(str::to_string);
                d.sent_shape = t.shape.clone();
                d.expected_dtype = c.spec(&t.name).and_then(|s| s.dtype.clone());
                d.expected_shape = c.spec(&t.name).and_then(|s| s.shape.clone());
            }
            let names: Vec<&str> = ragged.map(|t| vec![t.name.as_str()]).unwrap_or_default();
            d.evidence = c.evidence(true, &names);
            d.confidence = Confidence::Certain;
            d
        }
        Finding::RestFormat(what) => {
            c.certain(
                "wrong_format",
                text!("the JSON body has the wrong layout: {what}"),
                "send {\"instances\": [...]} (one entry per row) or {\"inputs\": {...}} (one entry per input), not both".into(),
            )
        }
        Finding::MalformedRequest { method, path } => {
            c.certain(
                "other",
                text!("{method} {path} is not a TF Serving REST API URL"),
                "POST to /v1/models/<model>[/versions/<n>]:predict (or :classify, :regress); GET /v1/models/<model>[/metadata]".into(),
            )
        }
        Finding::Known {
            category,
            summary,
            fix,
            input,
        } => {
            let mut d = c.diag(category, summary, fix);
            if let Some(name) = &input {
                d.sent_dtype = c.input(name).and_then(|t| t.dtype).map(str::to_string);
                d.sent_shape = c.input(name).and_then(|t| t.shape.clone());
                d.expected_dtype = c.spec(name).and_then(|s| s.dtype.clone());
                d.expected_shape = c.spec(name).and_then(|s| s.shape.clone());
            }
            d.evidence = c.evidence(false, &[]);
            d.input = input;
            d.confidence = Confidence::Certain;
            d
        }
        Finding::Other => return None,
    })
}

fn join_i64(v: &[i64]) -> String {
    v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

/// `Expects arg[i] …`: i counts the feeds sorted by tensor name.
fn dtype_arg(c: &Ctx<'_>, index: usize, want: &str, got: &str) -> Diagnosis {
    let want_dt = dtype::from_tf_string(want)
        .and_then(dtype::name)
        .unwrap_or("DT_?");
    let got_dt = dtype::from_tf_string(got)
        .and_then(dtype::name)
        .unwrap_or("DT_?");
    // With feed names from a declared signature, the mapping is exact.
    let by_feed = c.entry.and_then(|e| {
        let mut feeds: Vec<(&str, &str)> = e
            .signature
            .inputs
            .iter()
            .map(|s| Some((s.tensor_name.as_deref()?, s.alias.as_str())))
            .collect::<Option<Vec<_>>>()?;
        feeds.sort();
        // Only the inputs actually fed count, in the same order.
        let sent = ByName::new(&c.ex.inputs, |t| t.name.as_str());
        let fed: Vec<&str> = feeds
            .iter()
            .filter(|(_, a)| sent.contains(a))
            .map(|(_, a)| *a)
            .collect();
        fed.get(index).map(|a| a.to_string())
    });
    let (alias, conf) = match by_feed {
        Some(a) => {
            let agrees = c.input(&a).and_then(|t| t.dtype) == Some(got_dt);
            let conf = if agrees {
                Confidence::Certain
            } else {
                Confidence::Likely
            };
            (Some(a), conf)
        }
        None => {
            let matching: Vec<&TensorSummary> =
                c.ex.inputs
                    .iter()
                    .filter(|t| t.dtype == Some(got_dt))
                    .collect();
            if matching.len() == 1 {
                (
                    Some(matching[0].name.clone()),
                    c.confidence(true, c.spec(&matching[0].name).is_some()),
                )
            } else {
                // Keras exports name feeds `serving_default_<alias>:0`, so
                // sorted aliases usually follow the sorted feed names.
                let mut names: Vec<&str> = c.ex.inputs.iter().map(|t| t.name.as_str()).collect();
                names.sort_unstable();
                (
                    names.get(index).map(|s| s.to_string()),
                    Confidence::Possible.max(if matching.is_empty() {
                        Confidence::Possible
                    } else {
                        Confidence::Likely
                    }),
                )
            }
        }
    };
    match alias {
        Some(alias) => dtype_mismatch(c, &alias, got_dt, want_dt, conf),
        None => {
            // The request's tensors were not seen: name the feed position.
            let mut d = c.diag(
                "dtype_mismatch",
                text!(
                    "the input fed at position {index} (arg[{index}], feeds sorted by tensor name) was sent as {}; the model expects {}",
                    dtype_words(got_dt),
                    dtype_words(want_dt)
                ),
                text!(
                    "cast that input before sending, e.g. np.asarray(x, dtype=np.{}) or tf.make_tensor_proto(x, dtype={})",
                    dtype::code(want_dt).and_then(dtype::numpy).unwrap_or("…"),
                    tf_py_name(want_dt)
                ),
            );
            d.sent_dtype = Some(got_dt.to_string());
            d.expected_dtype = Some(want_dt.to_string());
            d.evidence = c.evidence(true, &[]);
            d.confidence = Confidence::Likely;
            d
        }
    }
}

fn dtype_mismatch(c: &Ctx<'_>, alias: &str, sent: &str, want: &str, conf: Confidence) -> Diagnosis {
    let others: Vec<String> =
        c.ex.inputs
            .iter()
            .filter(|t| {
                t.name != alias
                    && t.dtype == Some(sent)
                    && c.spec(&t.name)
                        .and_then(|s| s.dtype.as_deref())
                        .is_none_or(|d| d != sent)
            })
            .map(|t| t.name.clone())
            .collect();
    let mut summary = text!(
        "input '{alias}' was sent as {}; the model expects {}",
        dtype_words(sent),
        dtype_words(want)
    );
    if !others.is_empty() {
        summary.push_str(&text!(
            " (also sent as {}: {})",
            dtype::code(sent).and_then(dtype::numpy).unwrap_or(sent),
            others.join(", ")
        ));
    }
    let np = dtype::code(want).and_then(dtype::numpy).unwrap_or("…");
    let mut fix = text!(
        "cast before sending, e.g. np.asarray(x, dtype=np.{np}) or tf.make_tensor_proto(x, dtype={})",
        tf_py_name(want)
    );
    if sent == "DT_DOUBLE" || sent == "DT_INT64" {
        fix.push_str(&text!(
            "; numpy arrays of Python {} default to {}",
            if sent == "DT_DOUBLE" {
                "floats"
            } else {
                "ints"
            },
            dtype_words(sent)
        ));
    }
    if c.ex.transport == Transport::Rest {
        fix = text!("send JSON values that convert to {}", dtype_words(want));
    }
    let mut d = c.diag("dtype_mismatch", summary, fix);
    d.input = Some(alias.to_string());
    d.sent_dtype = Some(sent.to_string());
    d.expected_dtype = Some(want.to_string());
    d.sent_shape = c.input(alias).and_then(|t| t.shape.clone());
    d.expected_shape = c.spec(alias).and_then(|s| s.shape.clone());
    d.evidence = c.evidence(true, &[alias]);
    d.confidence = conf;
    d
}

fn input_set(
    c: &Ctx<'_>,
    sent: &[String],
    expected: &[String],
    extra: &[String],
    missing: &[String],
) -> Diagnosis {
    if let Some(first) = extra.first() {
        return unknown_alias(c, first, missing, expected);
    }
    if let Some(first) = missing.first() {
        return missing_input(c, first, expected);
    }
    // The message did not list them: compute from the request and the signature.
    let expected: Vec<String> = if expected.is_empty() {
        c.entry
            .map(|e| e.signature.inputs.iter().map(|s| s.alias.clone()).collect())
            .unwrap_or_default()
    } else {
        expected.to_vec()
    };
    let (in_expected, in_sent) = (
        ByName::new(&expected, String::as_str),
        ByName::new(sent, String::as_str),
    );
    let extra: Vec<String> = sent
        .iter()
        .filter(|s| !in_expected.contains(s))
        .cloned()
        .collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|e| !in_sent.contains(e))
        .cloned()
        .collect();
    match (extra.first(), missing.first()) {
        (Some(x), _) => unknown_alias(c, x, &missing, &expected),
        (None, Some(m)) => missing_input(c, m, &expected),
        (None, None) => {
            let mut d = c.diag(
                "missing_input",
                text!(
                    "the request's inputs ({}) do not match the signature's",
                    list(sent)
                ),
                text!("send exactly these inputs: {}", list(&expected)),
            );
            d.evidence = c.evidence(true, &[]);
            d.confidence = Confidence::Likely;
            d
        }
    }
}

fn unknown_alias(c: &Ctx<'_>, alias: &str, missing: &[String], expected: &[String]) -> Diagnosis {
    let suggestion = did_you_mean(alias, missing).or_else(|| did_you_mean(alias, expected));
    let expected_list = if expected.is_empty() {
        c.entry
            .map(|e| {
                e.signature
                    .inputs
                    .iter()
                    .map(|s| s.alias.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    } else {
        expected.to_vec()
    };
    let mut summary = text!(
        "input '{alias}' is not in signature '{}' of model '{}' (its inputs: {})",
        c.signature(),
        c.model(),
        list(&expected_list)
    );
    if let Some(s) = suggestion {
        summary.push_str(&text!("; did you mean '{s}'?"));
    }
    let fix = match suggestion {
        Some(s) => text!("rename the request input '{alias}' to '{s}' (request.inputs['{s}'])"),
        None => text!(
            "remove input '{alias}'; the signature's inputs are {}",
            list(&expected_list)
        ),
    };
    let mut d = c.diag("unknown_input_alias", summary, fix);
    d.input = Some(alias.to_string());
    d.sent_dtype = c
        .input(alias)
        .and_then(|t| t.dtype.or_else(|| json_denoted(t.json.as_deref()?)))
        .map(str::to_string);
    d.sent_shape = c.input(alias).and_then(|t| t.shape.clone());
    // The signature has nothing under an unknown alias: expected_* stay null.
    d.evidence = c.evidence(true, &[alias]);
    d.confidence = c.confidence(
        c.server.is_some(),
        c.entry.is_some_and(|e| e.signature.input(alias).is_none()),
    );
    d
}

fn missing_input(c: &Ctx<'_>, alias: &str, expected: &[String]) -> Diagnosis {
    let spec = c.spec(alias);
    let mut d = c.diag(
        "missing_input",
        text!(
            "input '{alias}' is required by signature '{}' of model '{}' but was not sent",
            c.signature(),
            c.model()
        ),
        text!(
            "add input '{alias}'{} to the request; the signature expects {}",
            spec.map(|s| text!(
                " ({} {})",
                s.dtype.as_deref().unwrap_or("?"),
                s.shape
                    .as_deref()
                    .map(shape_string)
                    .unwrap_or_else(|| "<unknown>".into())
            ))
            .unwrap_or_default(),
            list(expected)
        ),
    );
    d.input = Some(alias.to_string());
    d.expected_dtype = spec.and_then(|s| s.dtype.clone());
    d.expected_shape = spec.and_then(|s| s.shape.clone());
    d.evidence = c.evidence(true, &[]);
    d.confidence = c.confidence(c.server.is_some(), spec.is_some());
    d
}

fn malformed(c: &Ctx<'_>, alias: &str) -> Diagnosis {
    let t = c.input(alias);
    let problem = t.and_then(|t| t.problems.first().cloned());
    let fix = match &problem {
        Some(p) if p.contains("negative") => {
            "send concrete dimensions (e.g. [1,10], not [-1,10]); -1 is only valid in a signature".to_string()
        }
        Some(p) if p.contains("tensor_content") => {
            "build the tensor with tf.make_tensor_proto(np_array) so tensor_content matches dtype and shape".to_string()
        }
        Some(p) if p.contains("DT_INVALID") => "set the tensor's dtype".to_string(),
        _ => "build the tensor with tf.make_tensor_proto(np_array, dtype=…) instead of by hand".to_string(),
    };
    let mut d = c.diag(
        "malformed_tensor",
        match &problem {
            Some(p) => text!("input '{alias}' is not a valid tensor: {p}"),
            None => text!("the server could not parse input '{alias}' as a tensor"),
        },
        fix,
    );
    d.input = Some(alias.to_string());
    d.sent_dtype = t.and_then(|t| t.dtype).map(str::to_string);
    d.sent_shape = t.and_then(|t| t.shape.clone());
    d.expected_dtype = c.spec(alias).and_then(|s| s.dtype.clone());
    d.expected_shape = c.spec(alias).and_then(|s| s.shape.clone());
    d.evidence = c.evidence(false, &[alias]);
    // The request's own bytes show the defect: no signature needed.
    d.confidence = if problem.is_some() {
        Confidence::Certain
    } else {
        Confidence::Likely
    };
    d
}

fn unknown_signature(c: &Ctx<'_>, signature: &str) -> Diagnosis {
    let (names, complete) = c.book.signature_names(c.model());
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| n != signature && !n.starts_with("__"))
        .collect();
    let mut summary = text!("model '{}' has no signature '{signature}'", c.model());
    if !names.is_empty() {
        summary.push_str(&text!(
            " (signatures{}: {})",
            if complete { "" } else { " seen" },
            names.join(", ")
        ));
    }
    let fix = match did_you_mean(signature, &names).or_else(|| names.iter().find(|n| *n == "serving_default").map(String::as_str)) {
        Some(s) => text!("set model_spec.signature_name to '{s}' (empty means serving_default)"),
        None => "set model_spec.signature_name to a signature the model exports (saved_model_cli show --dir … --all lists them)".into(),
    };
    let mut d = c.diag("unknown_signature", summary, fix);
    d.evidence = c.evidence(false, &[]);
    d.confidence = c.confidence(true, complete);
    d
}

fn not_found(c: &Ctx<'_>, model: &str, version: Option<i64>) -> Diagnosis {
    let known = c.book.knows_model(model);
    let versions = c.book.versions(model);
    let models: Vec<String> = c
        .book
        .models()
        .filter(|m| *m != model)
        .map(str::to_string)
        .collect();
    let (category, summary, fix, conf) = match version {
        Some(v) if known => (
            "version_not_found",
            text!(
                "model '{model}' has no version {v} loaded{}",
                if versions.is_empty() { String::new() } else { text!(" (versions seen: {})", join_i64(&versions)) }
            ),
            match versions.last() {
                Some(latest) => text!("request an available version (e.g. {latest}), or leave the version unset for the latest"),
                None => "request an available version, or leave the version unset for the latest".to_string(),
            },
            Confidence::Certain,
        ),
        Some(v) => (
            "version_not_found",
            text!("version {v} of model '{model}' is not loaded (the model itself was not seen answering in this capture)"),
            "check the model name and version against the server's model config (GetModelStatus lists the loaded versions)".to_string(),
            Confidence::Likely,
        ),
        None => (
            "model_not_found",
            text!(
                "no model named '{model}' is loaded on the server{}",
                match did_you_mean(model, &models) {
                    Some(m) => text!("; did you mean '{m}'?"),
                    None if !models.is_empty() => text!(" (models seen: {})", models.join(", ")),
                    None => String::new(),
                }
            ),
            match did_you_mean(model, &models) {
                Some(m) => text!("set model_spec.name to '{m}'"),
                None => "check model_spec.name against the server's --model_name / model config; a model that is still loading is also not found".to_string(),
            },
            if known { Confidence::Likely } else { Confidence::Certain },
        ),
    };
    let mut d = c.diag(category, summary, fix);
    d.evidence = c.evidence(false, &[]);
    if !versions.is_empty() {
        d.evidence.push(text!(
            "traffic: versions of '{model}' seen: {}",
            join_i64(&versions)
        ));
    }
    d.confidence = conf;
    d
}

enum ShapeHint {
    /// MatMul: In[0] is the input, In[1] the weights [k, n].
    Matrix {
        in0: Vec<i64>,
        in1: Vec<i64>,
    },
    /// The kernel wanted more dimensions than it got.
    RankLow {
        shape: Vec<i64>,
        want_rank: usize,
    },
    None,
}

/// Compatibility of a sent shape with a signature shape (-1 matches anything).
fn fits(sent: &[i64], expected: &[i64]) -> bool {
    sent.len() == expected.len() && sent.iter().zip(expected).all(|(s, e)| *e < 0 || s == e)
}

fn shape_error(c: &Ctx<'_>, hint: ShapeHint) -> Diagnosis {
    if let Some(d) = batch_sizes(c) {
        return d;
    }
    // With a signature: find the input whose shape does not fit.
    for t in &c.ex.inputs {
        let (Some(sent), Some(exp)) = (
            t.shape.as_deref(),
            c.spec(&t.name).and_then(|s| s.shape.as_deref()),
        ) else {
            continue;
        };
        if fits(sent, exp) {
            continue;
        }
        return shape_diag(c, t, sent, exp, c.confidence(true, true));
    }
    // Without one: read the shapes the kernel printed.
    match hint {
        ShapeHint::Matrix { in0, in1 } => {
            if let Some(t) =
                c.ex.inputs
                    .iter()
                    .find(|t| t.shape.as_deref() == Some(in0.as_slice()))
            {
                let mut exp: Vec<i64> = vec![-1; in0.len()];
                if let (Some(last), Some(k)) = (exp.last_mut(), in1.first()) {
                    *last = *k;
                }
                return shape_diag(c, t, &in0, &exp, Confidence::Likely);
            }
        }
        ShapeHint::RankLow { shape, want_rank } => {
            if let Some(t) =
                c.ex.inputs
                    .iter()
                    .find(|t| t.shape.as_deref() == Some(shape.as_slice()))
            {
                if shape.len() + 1 == want_rank {
                    let mut exp = vec![-1];
                    exp.extend_from_slice(&shape);
                    return shape_diag(c, t, &shape, &exp, Confidence::Likely);
                }
            }
        }
        ShapeHint::None => {}
    }
    let mut d = c.diag(
        "shape_mismatch",
        text!(
            "the model rejected the shape of an input{}",
            c.server.as_deref().map(|m| text!(": {m}")).unwrap_or_default()
        ),
        "compare the request's shapes with the signature (GetModelMetadata, or saved_model_cli show)".into(),
    );
    d.evidence = c.evidence(
        true,
        &c.ex
            .inputs
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
    );
    d.confidence = Confidence::Possible;
    d
}

fn shape_diag(
    c: &Ctx<'_>,
    t: &TensorSummary,
    sent: &[i64],
    exp: &[i64],
    conf: Confidence,
) -> Diagnosis {
    let alias = t.name.as_str();
    let (category, summary, fix) = if sent.len() + 1 == exp.len() && fits(sent, &exp[1..]) {
        (
            "missing_batch_dim",
            text!(
                "input '{alias}' was sent with shape {}, one example without the batch dimension; the model expects {}",
                shape_string(sent),
                shape_string(exp)
            ),
            text!(
                "add a leading batch dimension: send shape {} (np.expand_dims(x, 0), or x[np.newaxis, ...]); REST: wrap each example in a list",
                shape_string(&[&[1], sent].concat())
            ),
        )
    } else if sent.len() == exp.len() + 1 && sent.first() == Some(&1) && fits(&sent[1..], exp) {
        (
            "shape_mismatch",
            text!(
                "input '{alias}' has an extra leading dimension: sent {}, the model expects {}",
                shape_string(sent),
                shape_string(exp)
            ),
            text!(
                "drop the extra dimension: send shape {} (np.squeeze(x, 0))",
                shape_string(&sent[1..])
            ),
        )
    } else if sent.len() == exp.len() {
        let dims: Vec<String> = sent
            .iter()
            .zip(exp)
            .enumerate()
            .filter(|(_, (s, e))| **e >= 0 && s != e)
            .map(|(i, (s, e))| text!("dimension {i} is {s}, expected {e}"))
            .collect();
        (
            "shape_mismatch",
            text!(
                "input '{alias}' has shape {}; the model expects {} ({})",
                shape_string(sent),
                shape_string(exp),
                dims.join("; ")
            ),
            text!(
                "reshape or re-featurise the input to {} before sending",
                shape_string(exp)
            ),
        )
    } else {
        (
            "shape_mismatch",
            text!(
                "input '{alias}' has rank {} (shape {}); the model expects rank {} ({})",
                sent.len(),
                shape_string(sent),
                exp.len(),
                shape_string(exp)
            ),
            text!("send the input with shape {}", shape_string(exp)),
        )
    };
    let mut d = c.diag(category, summary, fix);
    d.input = Some(alias.to_string());
    d.sent_dtype = t.dtype.map(str::to_string);
    d.sent_shape = Some(sent.to_vec());
    // A gRPC kernel error means the feed passed TF's dtype check first, so
    // without a signature the sent dtype is the expected one.
    let kernel_ran = c.ex.transport == Transport::Grpc && c.node.is_some();
    d.expected_dtype = c
        .spec(alias)
        .and_then(|s| s.dtype.clone())
        .or_else(|| kernel_ran.then(|| t.dtype.map(str::to_string)).flatten());
    d.expected_shape = Some(exp.to_vec());
    d.evidence = c.evidence(true, &[alias]);
    d.confidence = conf;
    d
}

/// Inputs whose dimension 0 differ: rows that cannot be paired.
fn batch_sizes(c: &Ctx<'_>) -> Option<Diagnosis> {
    let dims: Vec<(&str, i64)> =
        c.ex.inputs
            .iter()
            .filter_map(|t| Some((t.name.as_str(), *t.shape.as_ref()?.first()?)))
            .collect();
    // The batch size most inputs agree on; the odd one out is at fault.
    let count = |b: i64| dims.iter().filter(|(_, d)| *d == b).count();
    let common = dims
        .iter()
        .map(|(_, d)| *d)
        .max_by_key(|b| (count(*b), -*b))?;
    let reference = dims.iter().find(|(_, d)| *d == common)?;
    let odd = dims.iter().find(|(_, d)| *d != common)?;
    let mut d = c.diag(
        "batch_size_mismatch",
        text!(
            "inputs disagree on the batch size: '{}' has {} rows, while '{}'{} {} {}",
            odd.0,
            odd.1,
            reference.0,
            if count(common) > 1 { " (and the other inputs)" } else { "" },
            if count(common) > 1 { "have" } else { "has" },
            common
        ),
        text!(
            "send every input with the same number of rows (dimension 0): '{}' should have {} rows like the others",
            odd.0, common
        ),
    );
    d.input = Some(odd.0.to_string());
    d.sent_dtype = c.input(odd.0).and_then(|t| t.dtype).map(str::to_string);
    d.sent_shape = c.input(odd.0).and_then(|t| t.shape.clone());
    d.expected_dtype = c.spec(odd.0).and_then(|s| s.dtype.clone());
    d.expected_shape = c.spec(odd.0).and_then(|s| s.shape.clone());
    d.evidence = c.evidence(false, &dims.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    d.confidence = if c.server.is_some() {
        Confidence::Certain
    } else {
        Confidence::Likely
    };
    Some(d)
}

/// No rule matched the server's message (or there was none).
fn fallback(c: &Ctx<'_>) -> Diagnosis {
    let ex = c.ex;
    // The request itself was not protobuf, or not gRPC.
    if let Some(note) = ex
        .notes
        .iter()
        .find(|n| n.contains("JSON text, not protobuf") || n.contains("not application/grpc"))
    {
        let mut d = c.diag(
            "protocol_mismatch",
            text!("the request was not a protobuf gRPC message: {note}"),
            "send protobuf over gRPC to port 8500 (a generated PredictionService stub), or JSON to the REST API on port 8501 (POST /v1/models/<model>:predict)".into(),
        );
        d.evidence = c.evidence(false, &[]);
        d.evidence.push(text!("tfwire: {note}"));
        d.confidence = if ex
            .status
            .grpc_code
            .is_some_and(|code| code == 13 || code == 12 || code == 3)
        {
            Confidence::Certain
        } else {
            Confidence::Likely
        };
        return d;
    }
    // REST URLs the server could not route or convert (an HTML 404 page, or
    // a 400 with an empty body).
    if let Some(note) = ex
        .notes
        .iter()
        .find(|n| n.starts_with("not an API call: ") || n.contains("does not fit a 64-bit integer"))
    {
        let mut d = c.diag(
            "other",
            note.trim_start_matches("not an API call: ").to_string(),
            "POST to /v1/models/<model>[/versions/<n>]:predict (or :classify, :regress); GET /v1/models/<model>[/metadata]".into(),
        );
        d.evidence = c.evidence(false, &[]);
        d.evidence.push(text!(
            "request: {} {}",
            ex.http_method.as_deref().unwrap_or("?"),
            ex.path.as_deref().unwrap_or("?")
        ));
        d.confidence = Confidence::Certain;
        return d;
    }
    // Compare the request with the signature when the message said nothing usable.
    if let Some(d) = compare_request(c) {
        return d;
    }
    let code = ex.status.grpc_status.unwrap_or("");
    let (category, summary, fix) = match code {
        "UNAVAILABLE"
        | "INTERNAL"
        | "UNKNOWN"
        | "DATA_LOSS"
        | "FAILED_PRECONDITION"
        | "ABORTED"
        | "RESOURCE_EXHAUSTED" => {
            (
                if code == "RESOURCE_EXHAUSTED"
                    && c.server
                        .as_deref()
                        .is_some_and(|m| m.contains("larger than"))
                {
                    "message_too_large"
                } else {
                    "server_error"
                },
                text!(
                "the server failed with {code}{}: a server-side problem, not a malformed request",
                c.server.as_deref().map(|m| text!(" ({m})")).unwrap_or_default()
            ),
                "check the server's logs and model state (GetModelStatus); retry with backoff"
                    .to_string(),
            )
        }
        "UNIMPLEMENTED" => (
            "protocol_mismatch",
            text!(
                "the server does not implement {}",
                ex.path.as_deref().unwrap_or("this method")
            ),
            "call a method of tensorflow.serving.PredictionService or ModelService".to_string(),
        ),
        "DEADLINE_EXCEEDED" => (
            "other",
            "the call ran past its deadline (grpc-timeout) before the server answered".to_string(),
            "raise the client's timeout, or send smaller batches".to_string(),
        ),
        "CANCELLED" => (
            "other",
            "the call was cancelled (by the client, or by a deadline)".to_string(),
            "check why the client cancelled (timeouts, shutdown)".to_string(),
        ),
        _ if ex.status.reset.is_some() && ex.status.grpc_code.is_none() => (
            "other",
            text!("no status: {}", ex.status.reset.as_deref().unwrap_or("")),
            "capture longer, or check the network path".to_string(),
        ),
        _ => (
            "other",
            match &c.server {
                Some(m) => text!("unrecognised error: {m}"),
                None => "the call failed without a message".to_string(),
            },
            "see the server's message".to_string(),
        ),
    };
    let mut d = c.diag(category, summary, fix);
    d.evidence = c.evidence(false, &[]);
    if let Some(r) = &ex.status.reset {
        d.evidence.push(text!("stream: {r}"));
    }
    d.confidence = if c.server.is_some() {
        Confidence::Likely
    } else {
        Confidence::Possible
    };
    d
}

/// Request vs signature, for failures whose message tells nothing.
fn compare_request(c: &Ctx<'_>) -> Option<Diagnosis> {
    let e = c.entry?;
    let sig = &e.signature;
    let expected: Vec<String> = sig.inputs.iter().map(|s| s.alias.clone()).collect();
    let sent: Vec<String> = c.ex.inputs.iter().map(|t| t.name.clone()).collect();
    if sent.is_empty() {
        return None;
    }
    let weaken = |mut d: Diagnosis| {
        d.confidence = d.confidence.min(if e.source.is_declared() {
            Confidence::Likely
        } else {
            Confidence::Possible
        });
        d
    };
    // Indexed: one membership test per input must not scan every input.
    let (in_expected, in_sent) = (
        ByName::new(&expected, String::as_str),
        ByName::new(&sent, String::as_str),
    );
    let in_defaults = ByName::new(&sig.defaults, String::as_str);
    let extra: Vec<String> = sent
        .iter()
        .filter(|s| !in_expected.contains(s))
        .cloned()
        .collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|a| !in_sent.contains(a) && !in_defaults.contains(a))
        .cloned()
        .collect();
    if let Some(x) = extra.first() {
        return Some(weaken(unknown_alias(c, x, &missing, &expected)));
    }
    if let Some(m) = missing.first() {
        return Some(weaken(missing_input(c, m, &expected)));
    }
    let specs = sig.inputs_by_alias();
    for t in &c.ex.inputs {
        let Some(spec) = specs.get(&t.name) else {
            continue;
        };
        if let (Some(s), Some(w)) = (t.dtype, spec.dtype.as_deref()) {
            if s != w {
                return Some(weaken(dtype_mismatch(c, &t.name, s, w, Confidence::Likely)));
            }
        }
    }
    for t in &c.ex.inputs {
        if let (Some(s), Some(x)) = (
            t.shape.as_deref(),
            specs.get(&t.name).and_then(|s| s.shape.as_deref()),
        ) {
            if !fits(s, x) {
                return Some(weaken(shape_diag(c, t, s, x, Confidence::Likely)));
            }
        }
    }
    None
}

/// Warnings for a request that succeeded but was altered by the server.
pub fn warnings(ex: &Exchange, book: &SignatureBook) -> Vec<String> {
    let mut w = Vec::new();
    for t in &ex.inputs {
        if matches!(
            t.encoding,
            ValueEncoding::TensorContent | ValueEncoding::Json
        ) {
            continue;
        }
        let (Some(n), Some(values)) = (t.elements(), t.values) else {
            continue;
        };
        if values == n {
            continue;
        }
        let shape = t.shape.as_deref().map(shape_string).unwrap_or_default();
        w.push(if values == 0 && n > 0 {
            text!("input '{}': no values for shape {shape} ({n} elements); TF filled the tensor with zeros", t.name)
        } else if values < n {
            text!(
                "input '{}': {values} values for shape {shape} ({n} elements); TF repeated the last value to fill the other {}",
                t.name,
                n - values
            )
        } else {
            text!(
                "input '{}': {values} values for shape {shape} ({n} elements); TF ignored the extra {}",
                t.name,
                values - n
            )
        });
    }
    if let Some(e) = ex
        .model
        .as_deref()
        .and_then(|m| {
            book.lookup(
                m,
                ex.version,
                ex.signature.as_deref().unwrap_or("serving_default"),
            )
        })
        .filter(|e| e.source.is_declared())
    {
        let specs = e.signature.inputs_by_alias();
        for t in &ex.inputs {
            if let (Some(s), Some(x)) =
                (t.dtype, specs.get(&t.name).and_then(|s| s.dtype.as_deref()))
            {
                if s != x {
                    w.push(text!(
                        "input '{}' was sent as {s} but the signature declares {x}; the server accepted it",
                        t.name
                    ));
                }
            }
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_are_described_in_one_line() {
        let t = |encoding, shape: Option<Vec<i64>>, values, fields, json| TensorSummary {
            name: "x".into(),
            dtype: Some("DT_FLOAT"),
            dtype_code: None,
            shape,
            values,
            encoding,
            fields,
            bytes: 0,
            problems: Vec::new(),
            json,
        };
        for (tensor, want) in [
            (
                t(
                    ValueEncoding::TensorContent,
                    Some(vec![-1, 10]),
                    Some(20),
                    vec![],
                    None,
                ),
                "x DT_FLOAT [?,10] (tensor_content, 20 values)",
            ),
            (
                t(
                    ValueEncoding::Typed,
                    None,
                    None,
                    vec!["float_val", "int_val"],
                    None,
                ),
                "x DT_FLOAT <unknown> (float_val+int_val, ? values)",
            ),
            (
                t(ValueEncoding::Empty, Some(vec![]), Some(0), vec![], None),
                "x DT_FLOAT [] (no values, 0 values)",
            ),
            (
                t(
                    ValueEncoding::Json,
                    Some(vec![2]),
                    Some(2),
                    vec![],
                    Some(vec!["float", "int"]),
                ),
                "x DT_FLOAT [2] (JSON float/int, 2 values)",
            ),
        ] {
            assert_eq!(describe_tensor(&tensor), want);
        }
        assert_eq!(dtype_words("DT_DOUBLE"), "float64 (DT_DOUBLE)");
        assert_eq!(dtype_words("DT_STRING"), "DT_STRING");
    }

    #[test]
    fn typo_suggestions() {
        let c = vec!["features".to_string(), "mask".to_string()];
        assert_eq!(did_you_mean("feature", &c), Some("features"));
        assert_eq!(did_you_mean("Features", &c), Some("features"));
        assert_eq!(did_you_mean("zzzzzz", &c), None);
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        assert_eq!(
            levenshtein_within(&chars("kitten"), &chars("sitting"), 3),
            Some(3)
        );
        assert_eq!(
            levenshtein_within(&chars("kitten"), &chars("sitting"), 2),
            None
        );
        let long = "m".repeat(5000);
        assert_eq!(did_you_mean(&long, &c), None);
    }

    /// The bounded distance agrees with the full table wherever it answers.
    #[test]
    fn bounded_distance_matches_full_table() {
        fn full(a: &[char], b: &[char]) -> usize {
            let mut prev: Vec<usize> = (0..=b.len()).collect();
            for (i, ca) in a.iter().enumerate() {
                let mut cur = vec![i + 1; b.len() + 1];
                for (j, cb) in b.iter().enumerate() {
                    cur[j + 1] = (prev[j] + usize::from(ca != cb))
                        .min(prev[j + 1] + 1)
                        .min(cur[j] + 1);
                }
                prev = cur;
            }
            prev[b.len()]
        }
        let mut x: u64 = 0x853c_49e6_748f_ea9b;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5000 {
            let mut word = |n: u64| -> Vec<char> {
                (0..next() % n)
                    .map(|_| (b'a' + (next() % 4) as u8) as char)
                    .collect()
            };
            let (a, b) = (word(12), word(12));
            let max = (next() % 8) as usize;
            let d = full(&a, &b);
            assert_eq!(
                levenshtein_within(&a, &b, max),
                (d <= max).then_some(d),
                "{a:?} {b:?} {max}"
            );
        }
    }
}
