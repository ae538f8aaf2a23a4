//! SignatureBook: what each model expects, and where that knowledge came
//! from (DESIGN.md §4), in order of trust.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::tfserving::names;
use crate::tfserving::{Exchange, Signature, SignatureMap, TensorSpec, TensorSummary};

/// Where a signature came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--model-dir`: the SavedModel itself.
    ModelDir(String),
    /// `--signatures`: the REST metadata JSON.
    SignaturesFile(String),
    /// A GetModelMetadata (or REST metadata) response in the traffic.
    Metadata { exchange: u64, frame: Option<u64> },
    /// Generalised from successful requests in the traffic.
    Traffic { first_exchange: u64, requests: u64 },
}

impl Source {
    /// Higher is more trusted.
    pub fn trust(&self) -> u8 {
        match self {
            Source::ModelDir(_) => 4,
            Source::SignaturesFile(_) => 3,
            Source::Metadata { .. } => 2,
            Source::Traffic { .. } => 1,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::ModelDir(p) => text!("signature: SavedModel {p}"),
            Source::SignaturesFile(p) => text!("signature: metadata file {p}"),
            Source::Metadata { exchange, frame } => match frame {
                Some(f) => {
                    text!("signature: GetModelMetadata response, frame {f} (exchange {exchange})")
                }
                None => text!("signature: metadata response (exchange {exchange})"),
            },
            // In the evidence of most failures: written without the
            // formatting machinery.
            Source::Traffic {
                first_exchange,
                requests,
            } => [
                "signature: inferred from ",
                itoa::Buffer::new().format(*requests),
                if *requests == 1 {
                    " successful request (first: exchange "
                } else {
                    " successful requests (first: exchange "
                },
                itoa::Buffer::new().format(*first_exchange),
                ")",
            ]
            .concat(),
        }
    }

    /// Whether the signature is the model's own declaration (not inferred).
    pub fn is_declared(&self) -> bool {
        !matches!(self, Source::Traffic { .. })
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub signature: Signature,
    pub source: Source,
    /// The version this entry describes, if known.
    pub version: Option<i64>,
}

/// (version, signature name) → entry, in that order. Version None: applies
/// to any. Nested so that a lookup by name needs no owned key: every
/// successful call looks its signature up.
#[derive(Debug, Default, Clone)]
struct Entries(BTreeMap<Option<i64>, BTreeMap<String, Entry>>);

impl Entries {
    fn get(&self, version: Option<i64>, signature: &str) -> Option<&Entry> {
        self.0.get(&version)?.get(signature)
    }

    fn get_mut(&mut self, version: Option<i64>, signature: &str) -> Option<&mut Entry> {
        self.0.get_mut(&version)?.get_mut(signature)
    }

    fn insert(&mut self, version: Option<i64>, signature: String, entry: Entry) {
        self.0.entry(version).or_default().insert(signature, entry);
    }

    /// (version, signature name, entry), ordered by version then name.
    fn iter(&self) -> impl Iterator<Item = (Option<i64>, &str, &Entry)> {
        self.0
            .iter()
            .flat_map(|(v, m)| m.iter().map(move |(s, e)| (*v, s.as_str(), e)))
    }
}

#[derive(Debug, Default, Clone)]
struct Model {
    entries: Entries,
    /// Versions seen answering successfully or listed by metadata/status.
    versions: BTreeSet<i64>,
    /// Signature maps that are complete (metadata, SavedModel): a name
    /// missing from them is known not to exist.
    complete_for: BTreeSet<Option<i64>>,
}

/// Everything known about the models in a capture.
#[derive(Debug, Default, Clone)]
pub struct SignatureBook {
    models: BTreeMap<String, Model>,
}

impl SignatureBook {
    pub fn new() -> Self {
        SignatureBook::default()
    }

    /// Adds a model's full signature map from a declared source.
    pub fn add_map(
        &mut self,
        model: &str,
        version: Option<i64>,
        map: &SignatureMap,
        source: Source,
    ) {
        let Some(m) = self.model(model) else {
            return;
        };
        if let Some(v) = version {
            m.versions.insert(v);
        }
        m.complete_for.insert(version);
        for (name, sig) in map {
            let replace = m
                .entries
                .get(version, name)
                .is_none_or(|e| e.source.trust() <= source.trust());
            if replace {
                m.entries.insert(
                    version,
                    name.clone(),
                    Entry {
                        signature: sig.clone(),
                        source: source.clone(),
                        version,
                    },
                );
            }
        }
    }

    /// Learns from an exchange: metadata responses, status responses and
    /// successful requests.
    pub fn learn(&mut self, ex: &Exchange) {
        let Some(model) = ex.model.as_deref() else {
            return;
        };
        if !ex.status.ok {
            return;
        }
        let version = ex.resolved_version.or(ex.version);
        if let Some(map) = &ex.signatures {
            self.add_map(
                model,
                version,
                map,
                Source::Metadata {
                    exchange: ex.id,
                    frame: ex.response_frames.first().copied(),
                },
            );
        }
        let Some(m) = self.model(model) else {
            return;
        };
        if let Some(v) = version {
            m.versions.insert(v);
        }
        if let Some(st) = &ex.model_status {
            m.versions.extend(st.iter().map(|s| s.version));
        }
        // REST values are JSON: their dtype is only what the JSON denotes, and
        // a single row-format input has no alias; learn names and shapes only.
        let rest = ex.transport == crate::tfserving::Transport::Rest;
        if ex.method.as_deref() == Some("Predict")
            && !ex.inputs.is_empty()
            && !(rest && ex.inputs.iter().any(|t| t.name.is_empty()))
        {
            let sig_name = ex.signature.as_deref().unwrap_or("serving_default");
            match m.entries.get_mut(version, sig_name) {
                Some(e) => {
                    if let Source::Traffic { requests, .. } = &mut e.source {
                        *requests += 1;
                        merge(&mut e.signature.inputs, &ex.inputs, rest);
                        merge(&mut e.signature.outputs, &ex.outputs, rest);
                    }
                }
                None => {
                    m.entries.insert(
                        version,
                        sig_name.to_string(),
                        Entry {
                            signature: Signature {
                                method_name: "tensorflow/serving/predict".into(),
                                inputs: ex.inputs.iter().map(|t| generalise(t, rest)).collect(),
                                outputs: ex.outputs.iter().map(|t| generalise(t, rest)).collect(),
                                defaults: Vec::new(),
                            },
                            source: Source::Traffic {
                                first_exchange: ex.id,
                                requests: 1,
                            },
                            version,
                        },
                    );
                }
            }
        }
    }

    /// The best entry for a model/version/signature: the exact version first,
    /// then any version, most trusted source first.
    pub fn lookup(&self, model: &str, version: Option<i64>, signature: &str) -> Option<&Entry> {
        let m = self.models.get(model)?;
        if let Some(e) = m.entries.get(version, signature) {
            if version.is_some() {
                return Some(e);
            }
        }
        m.entries
            .iter()
            .filter(|&(_, s, _)| s == signature)
            .map(|(_, _, e)| e)
            .max_by_key(|e| {
                let typed = e.signature.inputs.iter().all(|s| s.dtype.is_some());
                (e.source.trust(), typed, e.version == version, e.version)
            })
    }

    /// The model's record, made on first sight (allocating its name only then).
    /// (Always Some; an Option because the borrow checker cannot yet see
    /// that a lookup which missed has ended, and traffic must not panic.)
    fn model(&mut self, model: &str) -> Option<&mut Model> {
        if !self.models.contains_key(model) {
            self.models.insert(model.to_string(), Model::default());
        }
        self.models.get_mut(model)
    }

    pub fn knows_model(&self, model: &str) -> bool {
        self.models.contains_key(model)
    }

    /// Whether a declared signature (not one inferred from traffic) is known.
    pub fn has_declared(&self, model: &str) -> bool {
        self.models
            .get(model)
            .is_some_and(|m| m.entries.iter().any(|(_, _, e)| e.source.is_declared()))
    }

    pub fn versions(&self, model: &str) -> Vec<i64> {
        self.models
            .get(model)
            .map(|m| m.versions.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Signature names known for a model, and whether the list is complete.
    pub fn signature_names(&self, model: &str) -> (Vec<String>, bool) {
        let Some(m) = self.models.get(model) else {
            return (Vec::new(), false);
        };
        let names: BTreeSet<String> = m.entries.iter().map(|(_, s, _)| s.to_string()).collect();
        (names.into_iter().collect(), !m.complete_for.is_empty())
    }

    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }
}

/// A request tensor as a signature entry: the batch dimension generalised.
fn generalise(t: &TensorSummary, rest: bool) -> TensorSpec {
    TensorSpec {
        alias: t.name.clone(),
        dtype: if rest {
            None
        } else {
            t.dtype.map(str::to_string)
        },
        shape: t.shape.as_ref().map(|dims| {
            let mut d = dims.clone();
            if let Some(first) = d.first_mut() {
                *first = -1;
            }
            d
        }),
        tensor_name: None,
    }
}

/// Widens inferred specs so they cover another successful request.
fn merge(specs: &mut Vec<TensorSpec>, seen: &[TensorSummary], rest: bool) {
    // In place and without allocating: this runs for every successful call.
    // Long lists get a hash index instead, or a scan per input costs K².
    if specs.len().max(seen.len()) > names::LINEAR_MAX {
        return merge_indexed(specs, seen, rest);
    }
    for t in seen {
        match specs.iter_mut().find(|s| s.alias == t.name) {
            Some(s) => widen(s, t, rest),
            None => specs.push(generalise(t, rest)),
        }
    }
}

/// [`merge`] for many inputs: the same first-match-by-alias, with the spec
/// each tensor widens (or appends) found through a hash map first.
fn merge_indexed(specs: &mut Vec<TensorSpec>, seen: &[TensorSummary], rest: bool) {
    let targets: Vec<usize> = {
        let mut at: HashMap<&str, usize> = HashMap::with_capacity(specs.len() + seen.len());
        for (i, s) in specs.iter().enumerate() {
            at.entry(s.alias.as_str()).or_insert(i);
        }
        let mut next = specs.len();
        seen.iter()
            .map(|t| {
                *at.entry(t.name.as_str()).or_insert_with(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect()
    };
    for (t, i) in seen.iter().zip(targets) {
        // Appended specs are pushed in order, so `i` is either an existing
        // spec or exactly the next one.
        match specs.get_mut(i) {
            Some(s) => widen(s, t, rest),
            None => specs.push(generalise(t, rest)),
        }
    }
}

/// Widens one inferred spec so it covers tensor `t`.
fn widen(s: &mut TensorSpec, t: &TensorSummary, rest: bool) {
    let dtype = if rest { None } else { t.dtype };
    if s.dtype.as_deref() != dtype {
        s.dtype = None;
    }
    match (&mut s.shape, &t.shape) {
        (Some(a), Some(b)) if a.len() == b.len() => {
            // Dimension 0 is the batch: always unknown.
            for (i, (x, y)) in a.iter_mut().zip(b).enumerate() {
                if i == 0 || *x != *y {
                    *x = -1;
                }
            }
        }
        (shape @ Some(_), _) => *shape = None,
        (None, _) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, dtype: Option<&'static str>, shape: Option<Vec<i64>>) -> TensorSummary {
        TensorSummary {
            name: name.to_string(),
            dtype,
            dtype_code: None,
            shape,
            values: None,
            encoding: crate::tfserving::ValueEncoding::Empty,
            fields: Vec::new(),
            bytes: 0,
            problems: Vec::new(),
            json: None,
        }
    }

    /// The definition `merge` must agree with: a scan per tensor.
    fn merge_by_scan(specs: &mut Vec<TensorSpec>, seen: &[TensorSummary], rest: bool) {
        for t in seen {
            match specs.iter_mut().find(|s| s.alias == t.name) {
                Some(s) => widen(s, t, rest),
                None => specs.push(generalise(t, rest)),
            }
        }
    }

    #[test]
    fn merge_agrees_with_a_scan_per_tensor() {
        // Names with duplicates, empty names, and varied dtypes and shapes,
        // in lists on both sides of the scan/index threshold.
        let batch = |n: usize, salt: usize| -> Vec<TensorSummary> {
            (0..n)
                .map(|i| {
                    let k = (i * 7 + salt) % (n / 2 + 1);
                    let name = if k % 5 == 0 {
                        String::new()
                    } else {
                        format!("in{k}")
                    };
                    let dtype = [Some("DT_FLOAT"), Some("DT_INT64"), None][(i + salt) % 3];
                    let shape = match (i + salt) % 4 {
                        0 => None,
                        1 => Some(vec![1, 3]),
                        2 => Some(vec![2, 3]),
                        _ => Some(vec![4]),
                    };
                    tensor(&name, dtype, shape)
                })
                .collect()
        };
        for (a, b) in [
            (0, 0),
            (0, 3),
            (3, 3),
            (8, 9),
            (9, 9),
            (0, 17),
            (20, 5),
            (300, 300),
        ] {
            for rest in [false, true] {
                let mut specs: Vec<TensorSpec> = Vec::new();
                merge_by_scan(&mut specs, &batch(a, 1), rest);
                let mut want = specs.clone();
                let seen = batch(b, 2);
                merge(&mut specs, &seen, rest);
                merge_by_scan(&mut want, &seen, rest);
                assert_eq!(specs, want, "{a} specs, {b} tensors, rest {rest}");
            }
        }
    }

    #[test]
    fn merging_50k_inputs_is_not_quadratic() {
        // A scan per input took minutes here.
        let seen: Vec<TensorSummary> = (0..50_000)
            .map(|i| tensor(&format!("k{i:06}"), Some("DT_FLOAT"), Some(vec![1])))
            .collect();
        let start = std::time::Instant::now();
        let mut specs = Vec::new();
        merge(&mut specs, &seen, false);
        merge(&mut specs, &seen, false);
        assert_eq!(specs.len(), 50_000);
        assert_eq!(specs[49_999].alias, "k049999");
        assert_eq!(specs[0].shape, Some(vec![-1]));
        assert!(start.elapsed().as_secs() < 30, "{:?}", start.elapsed());
    }

    #[test]
    fn sources_describe_themselves() {
        let traffic = |requests| Source::Traffic {
            first_exchange: 12,
            requests,
        };
        assert_eq!(
            traffic(1).describe(),
            "signature: inferred from 1 successful request (first: exchange 12)"
        );
        assert_eq!(
            traffic(40).describe(),
            "signature: inferred from 40 successful requests (first: exchange 12)"
        );
        assert_eq!(
            Source::Metadata {
                exchange: 3,
                frame: Some(9)
            }
            .describe(),
            "signature: GetModelMetadata response, frame 9 (exchange 3)"
        );
    }
}
