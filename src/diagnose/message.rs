//! Parses the error messages TF Serving and TensorFlow produce (TFSERVING.md
//! §3) into structured facts: which alias, which dtypes, which shapes.

/// The core of a server message and what was stripped from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Core {
    pub text: String,
    /// `node` of the `[[{{node NAME}}]]` suffix, innermost first.
    pub node: Option<String>,
    /// grpc_status_util cut the message at 1024 chars.
    pub truncated: bool,
}

/// A server message's core and what it says.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub core: Core,
    pub finding: Finding,
}

impl Parsed {
    pub fn of(message: &str) -> Parsed {
        let core = core(message);
        let finding = parse(&core.text);
        Parsed { core, finding }
    }
}

/// Strips the kernel node suffix, status-code prefixes and truncation marker.
pub fn core(message: &str) -> Core {
    let mut text = message;
    let truncated = text.ends_with("...TRUNCATED");
    if truncated {
        text = &text[..text.len() - "...TRUNCATED".len()];
    }
    let mut node = None;
    for marker in ["\n\t [[", " [[Node:", "\n\t[["] {
        if let Some(i) = text.find(marker) {
            let suffix = &text[i..];
            node = node_name(suffix);
            text = &text[..i];
            break;
        }
    }
    let text = strip_code_prefix(text.trim());
    Core {
        text: text.to_string(),
        node,
        truncated,
    }
}

fn node_name(suffix: &str) -> Option<String> {
    let start = suffix
        .find("{{node ")
        .map(|i| i + 7)
        .or_else(|| suffix.find("[[Node: ").map(|i| i + 8))?;
    let rest = &suffix[start..];
    let end = rest.find(['}', ' ', '=', ']'])?;
    Some(rest[..end].to_string())
}

/// `INVALID_ARGUMENT: msg` (absl) or `Invalid argument: msg` (older TF).
fn strip_code_prefix(s: &str) -> &str {
    const PREFIXES: &[&str] = &[
        "INVALID_ARGUMENT: ",
        "Invalid argument: ",
        "NOT_FOUND: ",
        "Not found: ",
        "FAILED_PRECONDITION: ",
        "Failed precondition: ",
        "UNIMPLEMENTED: ",
        "Unimplemented: ",
        "INTERNAL: ",
        "Internal: ",
        "RESOURCE_EXHAUSTED: ",
        "Resource exhausted: ",
        "UNAVAILABLE: ",
        "Unavailable: ",
    ];
    for p in PREFIXES {
        if let Some(rest) = s.strip_prefix(p) {
            return rest;
        }
    }
    s
}

/// What a message says, in tfwire's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// `Expects arg[i] to be X but Y is provided` (dtypes as TF prints them).
    DtypeArg {
        index: usize,
        want: String,
        got: String,
    },
    /// TFRT: `Expected input {alias} to be {want} but get {got}.`
    DtypeAlias {
        alias: String,
        want: String,
        got: String,
    },
    /// Input-count checks (every TF Serving version's wording).
    InputSet {
        sent: Vec<String>,
        expected: Vec<String>,
        extra: Vec<String>,
        missing: Vec<String>,
    },
    /// A signature alias the request lacks (≥ 2.14), with the request's keys.
    AliasMissing {
        alias: String,
        feed: Option<String>,
        sent: Vec<String>,
    },
    /// A request alias the signature lacks (< 2.14, and REST).
    AliasUnknown {
        alias: String,
        expected: Vec<String>,
    },
    TensorParsing {
        alias: String,
    },
    OutputAliasUnknown {
        alias: String,
        expected: Vec<String>,
    },
    DuplicateOutputAlias {
        alias: String,
    },
    SignatureNotFound {
        signature: String,
    },
    WrongSignatureMethod {
        expected: String,
        was: String,
    },
    ServableNotFound {
        model: String,
        version: Option<i64>,
    },
    VersionLabelUnknown {
        label: String,
    },
    VersionLabelsNotAllowed,
    MissingModelSpec,
    /// Kernel shape errors; shapes as printed, `-1` for `?`.
    MatrixIncompatible {
        in0: Vec<i64>,
        in1: Vec<i64>,
    },
    NotAMatrix {
        shape: Vec<i64>,
    },
    DifferentRanks {
        a: Vec<i64>,
        b: Vec<i64>,
    },
    IncompatibleShapes {
        a: Vec<i64>,
        b: Vec<i64>,
    },
    Reshape {
        values: u64,
        requested: u64,
    },
    RankRequired {
        rank: u32,
        shape: Vec<i64>,
    },
    IndexOutOfRange {
        index: String,
        value: i64,
        limit: i64,
    },
    /// Batching: inputs' 0th dimensions differ.
    BatchSizesDiffer,
    /// Batching: a scalar was fed.
    BatchingNeedsDimension,
    BatchTooLarge {
        size: u64,
        max: u64,
    },
    QueueFull,
    MessageTooLarge {
        size: u64,
        max: u64,
    },
    Placeholder {
        name: String,
    },
    /// REST: JSON syntax error at an offset.
    JsonParse {
        detail: String,
        offset: Option<u64>,
    },
    /// REST: JSON value of the wrong type for the dtype.
    JsonType {
        value: String,
        json_type: String,
        dtype: String,
    },
    /// REST: ragged rows.
    RaggedRows {
        expected: u64,
        got: u64,
    },
    /// REST request layout problems.
    RestFormat(String),
    /// REST: `Malformed request: {METHOD} {path}`.
    MalformedRequest {
        method: String,
        path: String,
    },
    /// A message whose meaning is fixed (the catalogue below): its category,
    /// what it means, how to fix it, and the input or feature it names.
    Known {
        category: &'static str,
        summary: String,
        fix: String,
        input: Option<String>,
    },
    Other,
}

fn known(
    category: &'static str,
    summary: impl Into<String>,
    fix: impl Into<String>,
    input: Option<&str>,
) -> Finding {
    Finding::Known {
        category,
        summary: summary.into(),
        fix: fix.into(),
        input: input.map(str::to_string),
    }
}

/// Messages of TFSERVING.md §3 that need no request or signature to explain.
fn catalogue(t: &str) -> Option<Finding> {
    // tf.Example parsing (Classify / Regress):
    // `Name: n, Key: f, Index: i.  Data types don't match. …`
    let feature = between(t, "Key: ", ",").map(str::trim);
    if t.contains("Data types don't match.") {
        let got = between(t, "Data type: ", " but").unwrap_or("?");
        let want = after(t, "expected type: ").unwrap_or("?").trim();
        return Some(known(
            "dtype_mismatch",
            format!(
                "tf.Example feature '{}' holds {got} values; the model parses it as {want}",
                feature.unwrap_or("?")
            ),
            format!("write the feature as a {want} list (float_list / int64_list / bytes_list) in every tf.Example"),
            feature,
        ));
    }
    if t.contains("values != expected.") {
        return Some(known(
            "shape_mismatch",
            format!(
                "tf.Example feature '{}' has the wrong number of values: {}",
                feature.unwrap_or("?"),
                after(t, "Values size: ").unwrap_or("").trim()
            ),
            "give the feature exactly the number of values its FixedLenFeature shape declares",
            feature,
        ));
    }
    if t.contains("is required but could not be found") {
        let f = between(t, "Feature: ", " (").map(str::trim);
        return Some(known(
            "missing_input",
            format!(
                "tf.Example feature '{}' is required but missing",
                f.unwrap_or("?")
            ),
            "add the feature to every tf.Example (or give it a default_value in the parsing spec)",
            f,
        ));
    }
    if t == "Input is empty." {
        return Some(known(
            "other",
            "the request holds no tf.Examples",
            "send at least one example in input.example_list",
            None,
        ));
    }
    if t.starts_with("Could not parse example input") {
        return Some(known(
            "malformed_tensor",
            "a serialized tf.Example in the request does not parse",
            "serialize examples with tf.train.Example(...).SerializeToString()",
            None,
        ));
    }
    // MultiInference (multi_inference.cc).
    if t.starts_with("Found ModelSpec with an empty model name")
        || t.starts_with("ModelSpec has no name specified")
    {
        return Some(known(
            "other",
            "a model_spec has no model name",
            "set model_spec.name (in every task of a MultiInference request)",
            None,
        ));
    }
    if t.starts_with("All ModelSpecs in a MultiInferenceRequest must access the same model name") {
        return Some(known(
            "other",
            "the tasks of a MultiInference request name different models",
            "send one MultiInference request per model",
            None,
        ));
    }
    if let Some(s) = t.strip_prefix("Duplicate evaluation of signature: ") {
        return Some(known(
            "other",
            format!(
                "signature '{}' is evaluated twice in one MultiInference request",
                s.trim()
            ),
            "list each signature once in tasks",
            None,
        ));
    }
    if let Some(m) = t
        .strip_prefix("Unrecognized signature method_name: ")
        .or_else(|| t.strip_prefix("Unsupported signature method_name: "))
    {
        return Some(known(
            "wrong_signature_method",
            format!(
                "MultiInference supports classify and regress signatures only; this task's signature has method {}",
                m.trim()
            ),
            "use Predict for predict signatures; MultiInference tasks must name classify or regress signatures",
            None,
        ));
    }
    if t.starts_with("Expected one input Tensor.")
        || t.starts_with("Expected one or two output Tensors")
        || t.starts_with("Expected one output Tensor.")
    {
        return Some(known(
            "server_error",
            format!("the model's classify/regress signature is malformed: {t}"),
            "re-export the model with signatures built by classification_signature_def / regression_signature_def",
            None,
        ));
    }
    if let Some(rest) = t.strip_prefix("Inputs contains invalid name. Used request inputs: ") {
        // `Used request inputs: a,b, request input: a,b,z`
        let (used, sent) = rest.split_once(", request input: ").unwrap_or((rest, ""));
        let used = names(used);
        let extra = names(sent).into_iter().find(|n| !used.contains(n));
        return Some(known(
            "unknown_input_alias",
            format!(
                "input '{}' is not in the signature",
                extra.as_deref().unwrap_or("?")
            ),
            "remove the input, or rename it to an alias of the signature",
            extra.as_deref(),
        ));
    }
    if let Some(rest) =
        t.strip_prefix("output_filter contains non-existed output names. output_filter: ")
    {
        let listed = names(rest);
        return Some(known(
            "unknown_output_alias",
            format!(
                "output_filter names outputs the signature does not have: {}",
                rest.trim()
            ),
            "request only outputs the signature lists, or leave output_filter empty",
            listed.first().map(String::as_str),
        ));
    }
    if t.contains("from different tasks have different shapes and padding is turned off") {
        let name = between(t, "Tensors with name '", "'");
        return Some(known(
            "shape_mismatch",
            format!(
                "requests batched together by the server send input '{}' with different shapes, and batch padding is off",
                name.unwrap_or("?")
            ),
            "send the same shape (pad on the client), or enable pad_variable_length_inputs in the server's batching config",
            name,
        ));
    }
    if t.starts_with("ConcatOp : ") || t.starts_with("Must provide as many biases") {
        return Some(known(
            "shape_mismatch",
            format!("the model could not combine the request's tensors: {t}"),
            "compare the request's shapes with the signature (GetModelMetadata, or saved_model_cli show)",
            None,
        ));
    }
    if t.starts_with("filter must be 4-dimensional") {
        return Some(known(
            "server_error",
            format!("the model's own weights have an unexpected shape: {t}"),
            "a model problem, not a request problem: check the export",
            None,
        ));
    }
    // REST body and URL problems.
    if t.starts_with("Encountered list at unexpected level")
        || t.contains("found at incorrect level")
    {
        return Some(known(
            "shape_mismatch",
            format!("the JSON nesting does not match the input's rank: {t}"),
            "nest the JSON lists exactly as deep as the input's rank (in row format, one level less per row)",
            None,
        ));
    }
    if t.contains("not formatted correctly for base64 data")
        || t.starts_with("Unable to base64 decode")
    {
        return Some(known(
            "wrong_format",
            format!("a {{\"b64\": …}} value is malformed: {t}"),
            "send {\"b64\": \"<standard base64>\"} with exactly that one key",
            None,
        ));
    }
    if let Some(rest) = t.strip_prefix("Conversion of JSON Value: ") {
        return Some(known(
            "other",
            format!("TF Serving's REST API cannot convert JSON to this input's dtype ({rest})"),
            "use the gRPC API for half, bfloat16 and complex inputs",
            None,
        ));
    }
    if t.starts_with("Tensor name: ")
        && (t.contains("has inconsistent batch size") || t.contains("has no shape information"))
    {
        return Some(known(
            "wrong_format",
            format!("the outputs cannot be written in row format: {t}"),
            "send the request in columnar format ({\"inputs\": …}); the response then comes as {\"outputs\": …}",
            None,
        ));
    }
    if t.starts_with("Failed to write JSON value for tensor type") {
        return Some(known(
            "server_error",
            format!("the server cannot write an output as JSON: {t}"),
            "use the gRPC API for this model's outputs",
            None,
        ));
    }
    if t.contains("'signature_name' key must be a string value") {
        return Some(known(
            "wrong_format",
            "signature_name is not a JSON string",
            "send \"signature_name\": \"serving_default\"",
            None,
        ));
    }
    if t.starts_with("Example must be JSON object")
        || t.contains("key 'examples' is expected and was not found")
        || t.contains("Expecting 'examples' value to be an list")
        || t.contains("'examples' value is an empty array")
    {
        return Some(known(
            "wrong_format",
            format!("the classify/regress body is not in the expected layout: {t}"),
            "send {\"examples\": [{\"feature\": value, …}, …]}",
            None,
        ));
    }
    if let Some(f) = between(t, "Feature: ", " has element with unexpected JSON type")
        .or_else(|| between(t, "Unexpected element type in feature: ", " "))
    {
        return Some(known(
            "dtype_mismatch",
            format!("tf.Example feature '{f}' has values of the wrong JSON type: {t}"),
            "send numbers for float/int64 features and strings (or {\"b64\": …}) for bytes features",
            Some(f),
        ));
    }
    if let Some(f) = between(t, "Feature: ", " has uint64_t element") {
        return Some(known(
            "dtype_mismatch",
            format!("tf.Example feature '{f}' has an integer beyond int64"),
            "keep integer features within int64",
            Some(f),
        ));
    }
    if t.starts_with("Origin header is missing in CORS preflight") {
        return Some(known(
            "other",
            "a CORS preflight (OPTIONS) without an Origin header",
            "send an Origin header with OPTIONS requests",
            None,
        ));
    }
    if t.starts_with("Missing model name in request.") {
        return Some(known(
            "other",
            "the URL names no model",
            "GET /v1/models/<model>",
            None,
        ));
    }
    if t.starts_with("Both model version") && t.contains("cannot be supplied") {
        return Some(known(
            "other",
            "the URL has both a version and a label",
            "use /versions/<n> or /labels/<label>, not both",
            None,
        ));
    }
    if t.starts_with("Failed to convert version: ")
        || t.starts_with("Failed to decode model name:")
        || t.starts_with("Failed to decode model version label:")
    {
        return Some(known(
            "other",
            format!("the URL cannot be decoded: {t}"),
            "percent-encode model names and labels; versions are decimal numbers",
            None,
        ));
    }
    // Server state.
    if t.starts_with("Model labels does not init yet")
        || t.starts_with("Session was not created with a graph before Run()")
        || t.starts_with("Predict internal error")
    {
        return Some(known(
            "server_error",
            format!("the server is not ready or failed internally: {t}"),
            "a server-side problem: check the model's load state (GetModelStatus) and the server log; retry later",
            None,
        ));
    }
    if let Some(f) = t
        .strip_prefix("Metadata field ")
        .and_then(|r| r.strip_suffix(" is not supported"))
    {
        return Some(known(
            "other",
            format!("GetModelMetadata field '{f}' is not supported; only \"signature_def\" is"),
            "request.metadata_field.append(\"signature_def\")",
            None,
        ));
    }
    if t.starts_with("GetModelMetadataRequest must specify at least one metadata_field") {
        return Some(known(
            "other",
            "GetModelMetadata must ask for metadata_field \"signature_def\", the only field TF Serving supports",
            "request.metadata_field.append(\"signature_def\")",
            None,
        ));
    }
    None
}

/// Splits `a,b,c` (TF's joined key sets) into names.
fn names(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// Content of the first `{…}` (or `[…]`) after `from`.
fn braced(s: &str, open: char, close: char) -> Option<(&str, &str)> {
    let i = s.find(open)?;
    let rest = &s[i + 1..];
    let j = rest.find(close)?;
    Some((&rest[..j], &rest[j + 1..]))
}

/// `[1,12]`, `[?,10]`, `[]` → dims.
pub fn parse_shape(s: &str) -> Option<Vec<i64>> {
    let s = s.trim().strip_prefix('[')?.strip_suffix(']')?;
    if s.trim().is_empty() {
        return Some(Vec::new());
    }
    s.split(',')
        .map(|d| {
            let d = d.trim();
            if d == "?" {
                Some(-1)
            } else {
                d.parse().ok()
            }
        })
        .collect()
}

/// First `[...]` token in `s`, parsed as a shape, and the text after it.
fn next_shape(s: &str) -> Option<(Vec<i64>, &str)> {
    let i = s.find('[')?;
    let j = s[i..].find(']')? + i;
    Some((parse_shape(&s[i..=j])?, &s[j + 1..]))
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let rest = &s[i..];
    let j = rest.find(end)?;
    Some(&rest[..j])
}

fn after<'a>(s: &'a str, start: &str) -> Option<&'a str> {
    s.find(start).map(|i| &s[i + start.len()..])
}

fn num(s: &str) -> Option<u64> {
    let d: String = s.trim().chars().take_while(char::is_ascii_digit).collect();
    d.parse().ok()
}

/// Wrappers of REST per-element failures followed into: real messages nest
/// one or two deep; a hostile one repeating the wrapper must cost neither a
/// stack frame nor a scan of the whole text per repetition.
const MAX_NESTING: usize = 8;

/// Parses a core message (see [`core`]).
pub fn parse(text: &str) -> Finding {
    // REST wraps per-element failures; the inner message carries the facts:
    // the innermost that says something wins, as the outer ones only repeat
    // its context.
    let mut levels = vec![text.trim()];
    while levels.len() <= MAX_NESTING {
        let Some(inner) = levels
            .last()
            .and_then(|t| after(t, "of 'instances' list. Error: "))
        else {
            break;
        };
        levels.push(strip_code_prefix(inner.trim()).trim());
    }
    levels
        .iter()
        .rev()
        .map(|t| parse_level(t))
        .find(|f| *f != Finding::Other)
        .unwrap_or(Finding::Other)
}

/// Parses one level of a message, its wrapped inner message aside.
fn parse_level(t: &str) -> Finding {
    if let Some(f) = catalogue(t) {
        return f;
    }
    if let Some(rest) = t.strip_prefix("Expects arg[") {
        if let (Some(i), Some(want), Some(got)) = (
            num(rest),
            between(rest, "to be ", " but "),
            between(rest, " but ", " is provided"),
        ) {
            return Finding::DtypeArg {
                index: i as usize,
                want: want.to_string(),
                got: got.to_string(),
            };
        }
    }
    if let Some(rest) = t.strip_prefix("Expected input ") {
        if let (Some(alias), Some(want), Some(got)) = (
            rest.split(" to be ").next(),
            between(rest, " to be ", " but get "),
            after(rest, " but get "),
        ) {
            return Finding::DtypeAlias {
                alias: alias.to_string(),
                want: want.to_string(),
                got: got.trim_end_matches('.').to_string(),
            };
        }
    }
    if t.starts_with("input size does not match signature")
        || t.starts_with("Request inputs do not match required inputs")
    {
        let sent = between(t, "len({", "})")
            .or_else(|| between(t, "len([", "])"))
            .map(names)
            .unwrap_or_default();
        let expected = after(t, "!= len(")
            .and_then(|r| braced(r, '{', '}').or_else(|| braced(r, '[', ']')))
            .map(|(inner, _)| names(inner))
            .unwrap_or_default();
        let extra = after(t, "Sent extra: ")
            .or_else(|| after(t, "Send extra: "))
            .and_then(|r| braced(r, '{', '}'))
            .map(|(inner, _)| names(inner))
            .unwrap_or_default();
        let missing = after(t, "Missing but required: ")
            .and_then(|r| braced(r, '{', '}'))
            .map(|(inner, _)| names(inner))
            .unwrap_or_default();
        return Finding::InputSet {
            sent,
            expected,
            extra,
            missing,
        };
    }
    if let Some(rest) = t.strip_prefix("Signature input alias: ") {
        let (alias, feed) = match rest.find("(feed name: ") {
            Some(i) => (
                &rest[..i],
                between(&rest[i..], "(feed name: ", ")").map(str::to_string),
            ),
            None => (rest.split(' ').next().unwrap_or(""), None),
        };
        let sent = after(rest, "Inputs expected to be in the request ")
            .and_then(|r| braced(r, '{', '}'))
            .map(|(inner, _)| names(inner))
            .unwrap_or_default();
        return Finding::AliasMissing {
            alias: alias.to_string(),
            feed,
            sent,
        };
    }
    if let Some(rest) = t.strip_prefix("input tensor alias not found in signature: ") {
        let alias = rest.split(['.', ' ']).next().unwrap_or("").to_string();
        let expected = braced(rest, '{', '}')
            .map(|(inner, _)| names(inner))
            .unwrap_or_default();
        return Finding::AliasUnknown { alias, expected };
    }
    if let Some(rest) = t.strip_prefix("JSON object: does not have named input: ") {
        return Finding::AliasMissing {
            alias: rest.trim().to_string(),
            feed: None,
            sent: Vec::new(),
        };
    }
    if let Some(rest) = t.strip_prefix("Missing named input: ") {
        let alias = rest.split(" in 'inputs'").next().unwrap_or("").trim();
        return Finding::AliasMissing {
            alias: alias.to_string(),
            feed: None,
            sent: Vec::new(),
        };
    }
    if let Some(rest) = t.strip_prefix("tensor parsing error: ") {
        return Finding::TensorParsing {
            alias: rest.trim().to_string(),
        };
    }
    if let Some(rest) = t.strip_prefix("output tensor alias not found in signature: ") {
        let alias = rest.split(' ').next().unwrap_or("").to_string();
        let expected = braced(rest, '{', '}')
            .map(|(inner, _)| names(inner))
            .unwrap_or_default();
        return Finding::OutputAliasUnknown { alias, expected };
    }
    if let Some(rest) = t.strip_prefix("duplicate output tensor alias: ") {
        return Finding::DuplicateOutputAlias {
            alias: rest.trim().to_string(),
        };
    }
    for (start, end) in [
        ("Serving signature key \"", "\" not found"),
        ("Serving signature name: \"", "\" not found"),
        ("Function \"", "\" not found"),
    ] {
        if t.starts_with(start) {
            if let Some(sig) = between(t, start, end) {
                return Finding::SignatureNotFound {
                    signature: sig.to_string(),
                };
            }
        }
    }
    for start in [
        "No signature was found with the name: ",
        "Requested signature not found in model graph: ",
        "Failed to get input map for signature: ",
    ] {
        if let Some(rest) = t.strip_prefix(start) {
            return Finding::SignatureNotFound {
                signature: rest.trim().trim_end_matches('.').to_string(),
            };
        }
    }
    if t.starts_with("Expected classification signature method_name to be ")
        || t.starts_with("Expected regression signature method_name to be ")
        || t.starts_with("Expected prediction signature method_name to be ")
    {
        let expected = between(t, "to be ", ". Was:").unwrap_or("").to_string();
        let was = after(t, "Was: ").unwrap_or("").trim().to_string();
        return Finding::WrongSignatureMethod { expected, was };
    }
    if let Some(rest) = t.strip_prefix("Servable not found for request: ") {
        if let Some(name) = between(rest, "Latest(", ")") {
            return Finding::ServableNotFound {
                model: name.to_string(),
                version: None,
            };
        }
        if let Some(inner) = between(rest, "Specific(", ")") {
            // The name may itself contain ", ": the version is after the last one.
            if let Some(i) = inner.rfind(", ") {
                return Finding::ServableNotFound {
                    model: inner[..i].to_string(),
                    version: inner[i + 2..].trim().parse().ok(),
                };
            }
        }
        // Truncated messages lose the closing parenthesis.
        if let Some(name) = after(rest, "Latest(") {
            return Finding::ServableNotFound {
                model: name.to_string(),
                version: None,
            };
        }
    }
    if let Some(rest) = t.strip_prefix("Could not find any versions of model ") {
        return Finding::ServableNotFound {
            model: rest.trim().to_string(),
            version: None,
        };
    }
    if let Some(rest) = t.strip_prefix("Could not find version ") {
        if let Some((v, m)) = rest.split_once(" of model ") {
            return Finding::ServableNotFound {
                model: m.trim().to_string(),
                version: v.trim().parse().ok(),
            };
        }
    }
    if let Some(rest) = t.strip_prefix("Unrecognized servable version label: ") {
        return Finding::VersionLabelUnknown {
            label: rest.trim().to_string(),
        };
    }
    if t.starts_with("ModelSpec has 'version_label' set, but it is not currently allowed") {
        return Finding::VersionLabelsNotAllowed;
    }
    if t == "Missing ModelSpec" || t.starts_with("ModelSpec has no name specified") {
        return Finding::MissingModelSpec;
    }
    if let Some(rest) = t.strip_prefix("Matrix size-incompatible: ") {
        if let Some((in0, rest)) = after(rest, "In[0]: ").and_then(next_shape) {
            if let Some((in1, _)) = after(rest, "In[1]: ").and_then(next_shape) {
                return Finding::MatrixIncompatible { in0, in1 };
            }
        }
    }
    if let Some(rest) = t.strip_prefix("In[0] is not a matrix. Instead it has shape ") {
        if let Some(shape) = parse_shape(rest) {
            return Finding::NotAMatrix { shape };
        }
    }
    if let Some(rest) = after(t, "has different ndims: ") {
        if let Some((a, rest)) = next_shape(rest) {
            if let Some((b, _)) = next_shape(rest) {
                return Finding::DifferentRanks { a, b };
            }
        }
    }
    if let Some(rest) = t.strip_prefix("Incompatible shapes: ") {
        if let Some((a, rest)) = next_shape(rest) {
            if let Some((b, _)) = next_shape(rest) {
                return Finding::IncompatibleShapes { a, b };
            }
        }
    }
    if let Some(rest) = t.strip_prefix("Input to reshape is a tensor with ") {
        if let (Some(values), Some(req)) = (num(rest), after(rest, "requested shape has ")) {
            if let Some(requested) = num(req) {
                return Finding::Reshape { values, requested };
            }
        }
    }
    // `input must be 4-dimensional[224,224,3]` (no separator) and variants.
    if let Some(i) = t.find("must be ") {
        let rest = &t[i + 8..];
        if let Some(j) = rest.find("-dimensional") {
            if let Ok(rank) = rest[..j].trim().parse::<u32>() {
                let shape = next_shape(&rest[j..]).map(|(s, _)| s).unwrap_or_default();
                return Finding::RankRequired { rank, shape };
            }
        }
    }
    if let Some(rest) = t.strip_prefix("indices") {
        if let (Some(index), Some(value), Some(limit)) = (
            rest.split(" = ").next(),
            between(rest, " = ", " is not in"),
            between(rest, "[0, ", ")"),
        ) {
            if let (Ok(value), Ok(limit)) = (value.trim().parse(), limit.trim().parse()) {
                return Finding::IndexOutOfRange {
                    index: index.to_string(),
                    value,
                    limit,
                };
            }
        }
    }
    if t.contains("input tensors must have equal 0th-dimension size") {
        return Finding::BatchSizesDiffer;
    }
    if t.contains("input tensors must have at least one dimension") {
        return Finding::BatchingNeedsDimension;
    }
    if let Some(rest) = t.strip_prefix("Task size ") {
        if let (Some(size), Some(max)) = (
            num(rest),
            after(rest, "maximum input batch size ").and_then(num),
        ) {
            return Finding::BatchTooLarge { size, max };
        }
    }
    if t.starts_with("The batch scheduling queue to which this task was submitted is full") {
        return Finding::QueueFull;
    }
    // grpc-core: "Received message larger than max (2097170 vs. 1048576)"
    if let Some(rest) = after(t, "message larger than max (") {
        if let (Some(size), Some(max)) = (num(rest), after(rest, " vs. ").and_then(num)) {
            return Finding::MessageTooLarge { size, max };
        }
    }
    if let Some(rest) = t.strip_prefix("You must feed a value for placeholder tensor '") {
        return Finding::Placeholder {
            name: rest.split('\'').next().unwrap_or("").to_string(),
        };
    }
    if let Some(rest) = t.strip_prefix("JSON Parse error: ") {
        let offset = after(rest, " at offset: ").and_then(num);
        let detail = rest
            .split(" at offset: ")
            .next()
            .unwrap_or(rest)
            .to_string();
        return Finding::JsonParse { detail, offset };
    }
    if let Some(rest) = t.strip_prefix("JSON Value: ") {
        if let Some(i) = rest.rfind(" Type: ") {
            let tail = &rest[i + 7..];
            if let Some((json_type, dtype)) = tail.split_once(" is not of expected type: ") {
                return Finding::JsonType {
                    value: rest[..i].to_string(),
                    json_type: json_type.to_string(),
                    dtype: dtype.trim().to_string(),
                };
            }
        }
    }
    if let Some(rest) = t.strip_prefix("Expecting tensor size: ") {
        if let (Some(expected), Some(got)) = (num(rest), after(rest, "but got: ").and_then(num)) {
            return Finding::RaggedRows { expected, got };
        }
    }
    if t.starts_with("Encountered list at unexpected size") || t.starts_with("Expecting shape ") {
        return Finding::RaggedRows {
            expected: after(t, "expected size: ").and_then(num).unwrap_or(0),
            got: after(t, "unexpected size: ").and_then(num).unwrap_or(0),
        };
    }
    if let Some(rest) = t.strip_prefix("Malformed request: ") {
        let (method, path) = rest.split_once(' ').unwrap_or((rest, ""));
        return Finding::MalformedRequest {
            method: method.to_string(),
            path: path.trim().to_string(),
        };
    }
    for pat in [
        "Missing 'inputs' or 'instances' key",
        "expecting only one of 'inputs' or 'instances' keys",
        "instances is a plain list, but expecting list of objects",
        "inputs is a plain value/list, but expecting an object",
        "Expecting 'instances' to be an list",
        "No values in 'instances' array",
        "Is not object",
        "Expecting object but got list",
        "Expecting value/list but got object",
        "keys must be equal to",
    ] {
        if t.contains(pat) {
            return Finding::RestFormat(pat.to_string());
        }
    }
    Finding::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(m: &str) -> Finding {
        parse(&core(m).text)
    }

    /// REST element wrappers nested in each other: the innermost message
    /// decides up to the nesting followed; a message repeating the wrapper
    /// 100,000 times (a hostile body) neither overflows the stack nor costs
    /// a scan of the text per repetition.
    #[test]
    fn nested_element_errors() {
        const WRAP: &str = "Failed to process element: 0 of 'instances' list. Error: ";
        let inner = "Invalid argument: Expecting tensor size: 34 but got: 20";
        let ragged = Finding::RaggedRows {
            expected: 34,
            got: 20,
        };
        for depth in 1..=MAX_NESTING {
            assert_eq!(
                p(&format!("{}{inner}", WRAP.repeat(depth))),
                ragged,
                "{depth}"
            );
        }
        // The outer levels still speak when the inner one says nothing.
        assert_eq!(
            p(&format!("{WRAP}{WRAP}gibberish")),
            parse_level(&format!("{WRAP}{WRAP}gibberish"))
        );
        let hostile = format!("{}{inner}", WRAP.repeat(100_000));
        let started = std::time::Instant::now();
        let _ = p(&hostile);
        // Generous: the recursive parser overflowed the stack here, and
        // took seconds at a tenth of the depth.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn core_strips_suffixes_and_prefixes() {
        let c = core(
            "Matrix size-incompatible: In[0]: [1,12], In[1]: [10,1]\n\t [[{{node dense/MatMul}}]]",
        );
        assert_eq!(
            c.text,
            "Matrix size-incompatible: In[0]: [1,12], In[1]: [10,1]"
        );
        assert_eq!(c.node.as_deref(), Some("dense/MatMul"));
        let c = core("input must be 4-dimensional[224,224,3]\n\t [[{{function_node __inference_serve_314}}{{node resize/ResizeBilinear}}]]");
        assert_eq!(c.node.as_deref(), Some("resize/ResizeBilinear"));
        let c = core("Invalid argument: In[0] is not a matrix. Instead it has shape [3] [[Node: MatMul = MatMul[T=DT_FLOAT]]]");
        assert_eq!(c.text, "In[0] is not a matrix. Instead it has shape [3]");
        assert_eq!(c.node.as_deref(), Some("MatMul"));
        let c = core("Servable not found for request: Latest(fraud_xxxx...TRUNCATED");
        assert!(c.truncated);
    }

    #[test]
    fn predict_checks() {
        assert_eq!(
            p("Expects arg[1] to be int32 but int64 is provided"),
            Finding::DtypeArg {
                index: 1,
                want: "int32".into(),
                got: "int64".into()
            }
        );
        assert_eq!(
            p("input size does not match signature: 2!=3 len({attention_mask,input_ids}) != len({attention_mask,input_ids,token_type_ids}). Sent extra: {}. Missing but required: {token_type_ids}."),
            Finding::InputSet {
                sent: vec!["attention_mask".into(), "input_ids".into()],
                expected: vec!["attention_mask".into(), "input_ids".into(), "token_type_ids".into()],
                extra: vec![],
                missing: vec!["token_type_ids".into()],
            }
        );
        assert_eq!(
            p("Signature input alias: features(feed name: serving_default_features:0) not found in request and no default value provided. Inputs expected to be in the request {feature}, or default input alias set: "),
            Finding::AliasMissing {
                alias: "features".into(),
                feed: Some("serving_default_features:0".into()),
                sent: vec!["feature".into()],
            }
        );
        assert_eq!(
            p("input tensor alias not found in signature: inputs. Inputs expected to be in the set {image_bytes}."),
            Finding::AliasUnknown { alias: "inputs".into(), expected: vec!["image_bytes".into()] }
        );
        assert_eq!(
            p("tensor parsing error: features"),
            Finding::TensorParsing {
                alias: "features".into()
            }
        );
        assert_eq!(
            p("output tensor alias not found in signature: score Outputs expected to be in the set {scores}."),
            Finding::OutputAliasUnknown { alias: "score".into(), expected: vec!["scores".into()] }
        );
        assert_eq!(
            p("Request inputs do not match required inputs for model `m`. Send extra: {x}. Missing but required: {y}."),
            Finding::InputSet { sent: vec![], expected: vec![], extra: vec!["x".into()], missing: vec!["y".into()] }
        );
        assert_eq!(
            p("Expected input x to be float but get double."),
            Finding::DtypeAlias {
                alias: "x".into(),
                want: "float".into(),
                got: "double".into()
            }
        );
    }

    #[test]
    fn model_and_signature_resolution() {
        assert_eq!(
            p("Serving signature key \"serving\" not found."),
            Finding::SignatureNotFound {
                signature: "serving".into()
            }
        );
        assert_eq!(
            p("Serving signature name: \"serving_default\" not found in signature def"),
            Finding::SignatureNotFound {
                signature: "serving_default".into()
            }
        );
        assert_eq!(
            p("No signature was found with the name: classifier"),
            Finding::SignatureNotFound {
                signature: "classifier".into()
            }
        );
        assert_eq!(
            p("Servable not found for request: Specific(fraud, 3)"),
            Finding::ServableNotFound {
                model: "fraud".into(),
                version: Some(3)
            }
        );
        assert_eq!(
            p("Servable not found for request: Latest(fraud_detector)"),
            Finding::ServableNotFound {
                model: "fraud_detector".into(),
                version: None
            }
        );
        assert_eq!(
            p("Could not find version 7 of model fraud"),
            Finding::ServableNotFound {
                model: "fraud".into(),
                version: Some(7)
            }
        );
        assert_eq!(
            p("Expected classification signature method_name to be tensorflow/serving/classify. Was: tensorflow/serving/predict"),
            Finding::WrongSignatureMethod {
                expected: "tensorflow/serving/classify".into(),
                was: "tensorflow/serving/predict".into()
            }
        );
        assert_eq!(
            p("Unrecognized servable version label: prod"),
            Finding::VersionLabelUnknown {
                label: "prod".into()
            }
        );
        assert_eq!(p("Missing ModelSpec"), Finding::MissingModelSpec);
    }

    #[test]
    fn kernel_and_batching_errors() {
        assert_eq!(
            p("Matrix size-incompatible: In[0]: [1,12], In[1]: [10,1]\n\t [[{{node dense/MatMul}}]]"),
            Finding::MatrixIncompatible { in0: vec![1, 12], in1: vec![10, 1] }
        );
        assert_eq!(
            p("In[0] is not a matrix. Instead it has shape [3]"),
            Finding::NotAMatrix { shape: vec![3] }
        );
        assert_eq!(
            p("In[0] and In[1] has different ndims: [10] vs. [10,1]\n\t [[{{node dense/MatMul}}]]"),
            Finding::DifferentRanks { a: vec![10], b: vec![10, 1] }
        );
        assert_eq!(
            p("Incompatible shapes: [2,128] vs. [1,128]"),
            Finding::IncompatibleShapes {
                a: vec![2, 128],
                b: vec![1, 128]
            }
        );
        assert_eq!(
            p("Input to reshape is a tensor with 280770 values, but the requested shape has 735 [[{{node x}}]]"),
            Finding::Reshape { values: 280_770, requested: 735 }
        );
        assert_eq!(
            p("input must be 4-dimensional[224,224,3]\n\t [[{{node c}}]]"),
            Finding::RankRequired {
                rank: 4,
                shape: vec![224, 224, 3]
            }
        );
        assert_eq!(
            p("convolution input must be 4-dimensional: [224,224,3]"),
            Finding::RankRequired {
                rank: 4,
                shape: vec![224, 224, 3]
            }
        );
        assert_eq!(
            p("indices[0,0] = 2366 is not in [0, 1000)\n\t [[{{node Gather}}]]"),
            Finding::IndexOutOfRange {
                index: "[0,0]".into(),
                value: 2366,
                limit: 1000
            }
        );
        assert_eq!(
            p("Batching session Run() input tensors must have equal 0th-dimension size"),
            Finding::BatchSizesDiffer
        );
        assert_eq!(
            p("Task size 40 is larger than maximum input batch size 32"),
            Finding::BatchTooLarge { size: 40, max: 32 }
        );
        assert_eq!(
            p("Received message larger than max (2097170 vs. 1048576)"),
            Finding::MessageTooLarge {
                size: 2_097_170,
                max: 1_048_576
            }
        );
        assert_eq!(
            p("You must feed a value for placeholder tensor 'Placeholder_1' with dtype float"),
            Finding::Placeholder {
                name: "Placeholder_1".into()
            }
        );
    }

    /// Every message of the TFSERVING.md §3 catalogue maps to its category.
    #[test]
    fn catalogue_messages() {
        let cat = |m: &str| match p(m) {
            Finding::Known {
                category, input, ..
            } => (category, input),
            other => panic!("{m}: {other:?}"),
        };
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("Name: <unknown>, Key: age, Index: 0.  Data types don't match. Data type: int64 but expected type: float", "dtype_mismatch", Some("age")),
            ("Name: <unknown>, Key: f, Index: 0.  Number of float values != expected.  Values size: 3 but output shape: [4]", "shape_mismatch", Some("f")),
            ("Name: <unknown>, Feature: zip (data type: int64) is required but could not be found.", "missing_input", Some("zip")),
            ("Input is empty.", "other", None),
            ("Could not parse example input, value: 'abc'", "malformed_tensor", None),
            ("Found ModelSpec with an empty model name.", "other", None),
            ("All ModelSpecs in a MultiInferenceRequest must access the same model name.", "other", None),
            ("Duplicate evaluation of signature: classify", "other", None),
            ("Unrecognized signature method_name: tensorflow/serving/predict", "wrong_signature_method", None),
            ("Unsupported signature method_name: foo", "wrong_signature_method", None),
            ("Expected one input Tensor.", "server_error", None),
            ("Expected one or two output Tensors, found 3", "server_error", None),
            ("Inputs contains invalid name. Used request inputs: a,b, request input: a,b,z", "unknown_input_alias", Some("z")),
            ("output_filter contains non-existed output names. output_filter: a,b", "unknown_output_alias", Some("a")),
            ("Tensors with name 'x' from different tasks have different shapes and padding is turned off. Set pad_variable_length_inputs to true", "shape_mismatch", Some("x")),
            ("ConcatOp : Dimension 1 in both shapes must be equal: shape[0] = [1,2] vs. shape[1] = [1,3]", "shape_mismatch", None),
            ("Must provide as many biases as the last dimension of the input tensor: [10] vs. [1,12]", "shape_mismatch", None),
            ("filter must be 4-dimensional: [3,3,3]", "server_error", None),
            ("Encountered list at unexpected level: 2 expected < 2", "shape_mismatch", None),
            ("JSON Value: 1.0 found at incorrect level: 2 in the JSON DOM. Expected at level: 1", "shape_mismatch", None),
            ("JSON Value: {\"b64\":1} not formatted correctly for base64 data", "wrong_format", None),
            ("Unable to base64 decode", "wrong_format", None),
            ("Conversion of JSON Value: 1.0 to type: half", "other", None),
            ("Tensor name: out has inconsistent batch size: 2 expecting: 1", "wrong_format", None),
            ("Tensor name: out has no shape information ", "wrong_format", None),
            ("Failed to write JSON value for tensor type: variant", "server_error", None),
            ("JSON Value: {} not formatted correctly. 'signature_name' key must be a string value.", "wrong_format", None),
            ("Example must be JSON object but got JSON Array", "wrong_format", None),
            ("JSON Value: {} When method is classify, key 'examples' is expected and was not found", "wrong_format", None),
            ("Feature: age has element with unexpected JSON type: String", "dtype_mismatch", Some("age")),
            ("Feature: big has uint64_t element. Only int64_t is supported.", "dtype_mismatch", Some("big")),
            ("Origin header is missing in CORS preflight", "other", None),
            ("Missing model name in request.", "other", None),
            ("Both model version (1) and model version label (stable) cannot be supplied.", "other", None),
            ("Failed to convert version: 99999999999999999999 to numeric.", "other", None),
            ("Model labels does not init yet.stable", "server_error", None),
            ("Session was not created with a graph before Run()!", "server_error", None),
            ("Predict internal error", "server_error", None),
            ("Metadata field foo is not supported", "other", None),
            ("GetModelMetadataRequest must specify at least one metadata_field", "other", None),
        ];
        for (m, category, input) in cases {
            assert_eq!(cat(m), (*category, input.map(str::to_string)), "{m}");
        }
    }

    #[test]
    fn rest_messages() {
        assert_eq!(
            p("JSON Parse error: Missing a comma or '}' after an object member. at offset: 27"),
            Finding::JsonParse {
                detail: "Missing a comma or '}' after an object member.".into(),
                offset: Some(27)
            }
        );
        assert_eq!(
            p("JSON Value: \"abc\" Type: String is not of expected type: float"),
            Finding::JsonType {
                value: "\"abc\"".into(),
                json_type: "String".into(),
                dtype: "float".into()
            }
        );
        assert_eq!(
            p("Failed to process element: 1 key: seq_input of 'instances' list. Error: Invalid argument: Expecting tensor size: 34 but got: 20"),
            Finding::RaggedRows { expected: 34, got: 20 }
        );
        assert_eq!(
            p("Failed to process element: 0 key: key_name of 'instances' list. Error: Invalid argument: JSON object: does not have named input: key_name"),
            Finding::AliasMissing { alias: "key_name".into(), feed: None, sent: vec![] }
        );
        assert_eq!(
            p("Malformed request: POST /v1/models/linear_model"),
            Finding::MalformedRequest {
                method: "POST".into(),
                path: "/v1/models/linear_model".into()
            }
        );
        assert!(matches!(
            p("Missing 'inputs' or 'instances' key"),
            Finding::RestFormat(_)
        ));
        assert_eq!(p("something else entirely"), Finding::Other);
    }
}
