//! REST JSON bodies summarised while they are parsed. A body is up to
//! `--max-body-bytes` (64 MiB) of attacker-controlled JSON; building a
//! `serde_json::Value` of it took 8–100 times its size (every number a
//! 32-byte value, every object a B-tree node), so a single large request of
//! image pixels as nested lists used more memory than the rest of a run.
//! Here each tensor is folded into its shape, value count and JSON kinds as
//! its bytes are read: memory follows the number of tensors, not values.
//!
//! The same parser (serde_json, through `deserialize_any` everywhere) reads
//! every byte, so what is valid JSON and the error message for what is not
//! are exactly those of `serde_json::from_slice`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::names;

/// Shape by nesting (first element at each level), scalar count, JSON kinds
/// of the scalars, and whether the nesting is ragged.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Nest {
    pub shape: Vec<i64>,
    pub values: u64,
    pub kinds: Vec<&'static str>,
    pub ragged: bool,
}

impl Nest {
    /// One scalar at the root (`{"b64": …}` and other objects are scalars).
    fn scalar(kind: &'static str) -> Nest {
        Nest {
            values: 1,
            kinds: vec![kind],
            ..Nest::default()
        }
    }

    fn is_string(&self) -> bool {
        self.shape.is_empty() && self.values == 1 && self.kinds == ["string"]
    }
}

/// A `Nest` built from parse events. The shape is the lengths of the lists
/// on the path of first elements. In depth-first order that path is walked
/// first, and its list at each depth is the first list there to end (the
/// deepest first), so every later list can be checked against it.
#[derive(Default)]
struct NestBuilder {
    nest: Nest,
    /// The shape's rank, known once the path of first elements reaches a
    /// scalar or an empty list.
    rank: Option<usize>,
    /// `nest.shape[known..]` are known lengths.
    known: usize,
}

impl NestBuilder {
    fn enter(&mut self) {
        if self.rank.is_none() {
            // Still on the path of first elements: one more level.
            self.nest.shape.push(0);
        }
    }

    fn set_rank(&mut self, rank: usize) -> usize {
        *self.rank.get_or_insert_with(|| {
            self.known = rank;
            rank
        })
    }

    fn leave(&mut self, depth: usize, len: u64) {
        // A list that ends before the rank is known is empty: it ends the path.
        let rank = self.set_rank(depth + 1);
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        let path = depth < self.known;
        match self.nest.shape.get_mut(depth) {
            Some(l) if depth < rank && path => {
                *l = len;
                self.known = depth;
            }
            Some(l) if depth < rank && *l == len => {}
            _ => self.nest.ragged = true,
        }
    }

    fn scalar(&mut self, depth: usize, kind: &'static str) {
        if self.set_rank(depth) != depth {
            self.nest.ragged = true;
        }
        self.nest.values += 1;
        if !self.nest.kinds.contains(&kind) {
            self.nest.kinds.push(kind);
        }
    }

    fn finish(self) -> Nest {
        self.nest
    }
}

const FLOAT: &str = "float";

/// TF Serving's name for a JSON float: serde_json never yields a float
/// that is not finite, but `Value` would call one null.
fn float_kind(v: f64) -> &'static str {
    if v.is_finite() {
        FLOAT
    } else {
        "null"
    }
}

/// Reads one value of a tensor into `b`, `depth` lists down.
struct Tensor<'b> {
    b: &'b mut NestBuilder,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Tensor<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tensor<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.b.scalar(self.depth, "bool");
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.b.scalar(self.depth, "int");
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.b.scalar(self.depth, "int");
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.b.scalar(self.depth, float_kind(v));
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.b.scalar(self.depth, "string");
        Ok(())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.b.scalar(self.depth, "null");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Tensor { b, depth } = self;
        b.enter();
        let mut len = 0u64;
        while seq
            .next_element_seed(Tensor {
                b: &mut *b,
                depth: depth + 1,
            })?
            .is_some()
        {
            len += 1;
        }
        b.leave(depth, len);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // An object inside a tensor is one value: TF Serving's {"b64": "…"}
        // wrapper for bytes, or an object it rejects. Its members are only
        // looked at to tell which.
        let (mut any, mut only_b64, mut last_string) = (false, true, false);
        while let Some(k) = map.next_key_seed(Key)? {
            any = true;
            let string = matches!(map.next_value_seed(SKIP)?, Got::String);
            if k == "b64" {
                last_string = string;
            } else {
                only_b64 = false;
            }
        }
        let kind = if any && only_b64 && last_string {
            "b64"
        } else {
            "object"
        };
        self.b.scalar(self.depth, kind);
        Ok(())
    }
}

/// An object key, borrowed from the body unless it has escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Named tensors summarised per body. Real signatures have tens of inputs,
/// rarely hundreds; a name costs about 600 bytes from here to the output
/// line and can come from 8 bytes of JSON, so past this many a body's
/// tensors are reported as too many rather than summarised.
pub const MAX_NAMED: usize = 10_000;

/// Tensors by name, sorted; "" for one whose alias comes from the signature.
#[derive(Debug, Default)]
pub struct Tensors<'de> {
    pub named: Vec<(Cow<'de, str>, Nest)>,
    /// More than `MAX_NAMED` names: `named` is empty.
    pub too_many: bool,
}

impl<'de> Tensors<'de> {
    fn one(n: Nest) -> Tensors<'de> {
        Tensors {
            named: vec![(Cow::Borrowed(""), n)],
            too_many: false,
        }
    }
}

/// Sorts by key, of equal keys keeping the last (the sort is stable).
fn sort_keep_last(items: &mut Vec<(Cow<'_, str>, Nest)>) {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
}

/// The members of an object of tensors (a row, or the columnar map), sorted
/// by key, a key given twice keeping its last value (see `RequestBody`); and
/// whether the object is a {"b64": "…"} wrapper instead.
fn members<'de, A: MapAccess<'de>>(mut map: A) -> Result<(Tensors<'de>, bool), A::Error> {
    let mut items = Vec::new();
    let (mut any, mut only_b64, mut last_b64_string) = (false, true, false);
    let mut too_many = false;
    while let Some(k) = map.next_key_seed(Key)? {
        any = true;
        let (nest, string) = if too_many {
            (None, matches!(map.next_value_seed(SKIP)?, Got::String))
        } else {
            let mut b = NestBuilder::default();
            map.next_value_seed(Tensor {
                b: &mut b,
                depth: 0,
            })?;
            let n = b.finish();
            let string = n.is_string();
            (Some(n), string)
        };
        if k == "b64" {
            last_b64_string = string;
        } else {
            only_b64 = false;
        }
        let Some(nest) = nest else {
            continue;
        };
        if items.len() == 2 * MAX_NAMED {
            // Repeats count once: fold them now, and give up only past
            // MAX_NAMED distinct names. At least MAX_NAMED pushes separate
            // two folds, so a key repeated without end stays linear.
            sort_keep_last(&mut items);
            if items.len() > MAX_NAMED {
                too_many = true;
                items = Vec::new();
                continue;
            }
        }
        items.push((k, nest));
    }
    let b64 = any && only_b64 && last_b64_string;
    sort_keep_last(&mut items);
    if items.len() > MAX_NAMED {
        too_many = true;
        items = Vec::new();
    }
    let named = items;
    Ok((Tensors { named, too_many }, b64))
}

/// Row-format tensors (a key per input or output, one object per row) being
/// folded row by row: `[rows, …]` each, ragged when a row lacks the key or
/// differs in shape.
#[derive(Default)]
struct NamedRows<'de> {
    accs: Vec<Acc<'de>>,
    /// Filled only once there are more keys than are worth scanning.
    index: HashMap<Cow<'de, str>, usize>,
    /// Past `MAX_NAMED` names: nothing more is kept.
    too_many: bool,
}

struct Acc<'de> {
    name: Cow<'de, str>,
    count: u64,
    first_shape: Vec<i64>,
    values: u64,
    kinds: Vec<&'static str>,
    ragged: bool,
}

impl<'de> NamedRows<'de> {
    fn add(&mut self, row: Tensors<'de>) {
        if row.too_many {
            self.give_up();
        }
        if self.too_many {
            return;
        }
        for (name, n) in row.named {
            let found = if self.accs.len() <= names::LINEAR_MAX {
                self.accs.iter().position(|a| a.name == name)
            } else {
                if self.index.is_empty() {
                    let index = self.accs.iter().enumerate();
                    self.index = index.map(|(i, a)| (a.name.clone(), i)).collect();
                }
                self.index.get(&name).copied()
            };
            if found.is_none() && self.accs.len() == MAX_NAMED {
                self.give_up();
                return;
            }
            let i = found.unwrap_or_else(|| {
                if !self.index.is_empty() {
                    self.index.insert(name.clone(), self.accs.len());
                }
                self.accs.push(Acc {
                    name,
                    count: 0,
                    first_shape: n.shape.clone(),
                    values: 0,
                    kinds: Vec::new(),
                    ragged: false,
                });
                self.accs.len() - 1
            });
            let Some(a) = self.accs.get_mut(i) else {
                continue;
            };
            a.count += 1;
            a.values += n.values;
            for k in n.kinds {
                if !a.kinds.contains(&k) {
                    a.kinds.push(k);
                }
            }
            a.ragged |= n.ragged || n.shape != a.first_shape;
        }
    }

    fn give_up(&mut self) {
        self.too_many = true;
        self.accs = Vec::new();
        self.index = HashMap::new();
    }

    fn finish(mut self, rows: u64) -> Tensors<'de> {
        self.accs.sort_by(|a, b| a.name.cmp(&b.name));
        let rows_dim = i64::try_from(rows).unwrap_or(i64::MAX);
        let named = self
            .accs
            .into_iter()
            .map(|a| {
                let mut shape = Vec::with_capacity(a.first_shape.len() + 1);
                shape.push(rows_dim);
                shape.extend_from_slice(&a.first_shape);
                let nest = Nest {
                    shape,
                    values: a.values,
                    kinds: a.kinds,
                    ragged: a.ragged || a.count != rows,
                };
                (a.name, nest)
            })
            .collect();
        Tensors {
            named,
            too_many: self.too_many,
        }
    }
}

/// What a value is read for; anything else in it is parsed and dropped.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    Skip,
    /// A string's text.
    Str,
    /// A list's length.
    Len,
    /// A row-format list ("instances", "predictions").
    Rows,
    /// A row of named tensors, after the first.
    Row,
    /// A columnar value ("inputs", "outputs"): a map of tensors or one tensor.
    Columnar,
    Request {
        examples: bool,
    },
    Response(Reply),
}

/// Which members of a response body its route makes worth reading.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reply {
    Predict,
    /// Classify and Regress: only how many results came back.
    Results,
    /// Only the error message.
    Other,
}

enum Got<'de> {
    Nothing,
    /// A string, under `Want::Skip`.
    String,
    Str(String),
    Len(u64),
    Tensors(Tensors<'de>),
    Request(RequestBody<'de>),
    Response(ResponseBody<'de>),
}

struct Skim {
    want: Want,
}

const SKIP: Skim = Skim { want: Want::Skip };

impl Skim {
    fn scalar<'de>(self, kind: &'static str) -> Got<'de> {
        match self.want {
            Want::Columnar => Got::Tensors(Tensors::one(Nest::scalar(kind))),
            _ => Got::Nothing,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Skim {
    type Value = Got<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Got<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skim {
    type Value = Got<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Got<'de>, E> {
        Ok(self.scalar("bool"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Got<'de>, E> {
        Ok(self.scalar("int"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Got<'de>, E> {
        Ok(self.scalar("int"))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Got<'de>, E> {
        Ok(self.scalar(float_kind(v)))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Got<'de>, E> {
        Ok(self.scalar("null"))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Got<'de>, E> {
        Ok(match self.want {
            Want::Skip => Got::String,
            Want::Str => Got::Str(v.to_owned()),
            _ => self.scalar("string"),
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Got<'de>, A::Error> {
        Ok(match self.want {
            Want::Len => {
                let mut n = 0;
                while seq.next_element_seed(SKIP)?.is_some() {
                    n += 1;
                }
                Got::Len(n)
            }
            Want::Rows => Got::Tensors(rows(seq)?),
            Want::Columnar => {
                let mut b = NestBuilder::default();
                Tensor {
                    b: &mut b,
                    depth: 0,
                }
                .visit_seq(seq)?;
                Got::Tensors(Tensors::one(b.finish()))
            }
            _ => {
                while seq.next_element_seed(SKIP)?.is_some() {}
                Got::Nothing
            }
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Got<'de>, A::Error> {
        Ok(match self.want {
            Want::Columnar => {
                let (tensors, b64) = members(map)?;
                if b64 {
                    Got::Tensors(Tensors::one(Nest::scalar("b64")))
                } else {
                    Got::Tensors(tensors)
                }
            }
            Want::Row => Got::Tensors(members(map)?.0),
            Want::Request { examples } => Got::Request(request(map, examples)?),
            Want::Response(reply) => Got::Response(response(map, reply)?),
            _ => {
                while map.next_key_seed(Key)?.is_some() {
                    map.next_value_seed(SKIP)?;
                }
                Got::Nothing
            }
        })
    }
}

/// A row-format list: named rows when its first element is an object that
/// is not a {"b64": …} wrapper, else one tensor of the whole list.
fn rows<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Tensors<'de>, A::Error> {
    let mut list = NestBuilder::default();
    list.enter();
    let first = seq.next_element_seed(FirstRow { list: &mut list })?;
    let mut len = u64::from(first.is_some());
    if let Some(Some(row)) = first {
        let mut named = NamedRows::default();
        named.add(row);
        while let Some(got) = seq.next_element_seed(Skim { want: Want::Row })? {
            len += 1;
            if let Got::Tensors(row) = got {
                named.add(row);
            }
        }
        return Ok(named.finish(len));
    }
    while seq
        .next_element_seed(Tensor {
            b: &mut list,
            depth: 1,
        })?
        .is_some()
    {
        len += 1;
    }
    list.leave(0, len);
    Ok(Tensors::one(list.finish()))
}

/// The first element of a row-format list: the named row it starts, or
/// (None) an element of the one unnamed tensor.
struct FirstRow<'b> {
    list: &'b mut NestBuilder,
}

impl FirstRow<'_> {
    fn element(&mut self) -> Tensor<'_> {
        Tensor {
            b: &mut *self.list,
            depth: 1,
        }
    }
}

impl<'de> DeserializeSeed<'de> for FirstRow<'_> {
    type Value = Option<Tensors<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstRow<'_> {
    type Value = Option<Tensors<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(mut self, v: bool) -> Result<Self::Value, E> {
        self.element().visit_bool(v).map(|()| None)
    }
    fn visit_i64<E: serde::de::Error>(mut self, v: i64) -> Result<Self::Value, E> {
        self.element().visit_i64(v).map(|()| None)
    }
    fn visit_u64<E: serde::de::Error>(mut self, v: u64) -> Result<Self::Value, E> {
        self.element().visit_u64(v).map(|()| None)
    }
    fn visit_f64<E: serde::de::Error>(mut self, v: f64) -> Result<Self::Value, E> {
        self.element().visit_f64(v).map(|()| None)
    }
    fn visit_str<E: serde::de::Error>(mut self, v: &str) -> Result<Self::Value, E> {
        self.element().visit_str(v).map(|()| None)
    }
    fn visit_unit<E: serde::de::Error>(mut self) -> Result<Self::Value, E> {
        self.element().visit_unit().map(|()| None)
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, seq: A) -> Result<Self::Value, A::Error> {
        self.element().visit_seq(seq).map(|()| None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let (row, b64) = members(map)?;
        if b64 {
            self.list.scalar(1, "b64");
            return Ok(None);
        }
        Ok(Some(row))
    }
}

/// The members of a request body that TF Serving reads (json_tensor.cc); a
/// member given twice counts as its last value, as in serde_json's map and
/// tfwire's reading before this module. TF Serving's rapidjson lookups find
/// the first; bodies that repeat a member are rare enough that this is left
/// as it was.
#[derive(Debug, Default)]
pub struct RequestBody<'de> {
    /// The body is a JSON object.
    pub object: bool,
    /// Present, and its text if it is a string.
    pub signature: Option<Option<String>>,
    /// Present, and its tensors if it is a list.
    pub instances: Option<Option<Tensors<'de>>>,
    pub inputs: Option<Tensors<'de>>,
    /// Present, and its length if it is a list (Classify and Regress).
    pub examples: Option<Option<u64>>,
}

fn request<'de, A: MapAccess<'de>>(
    mut map: A,
    examples: bool,
) -> Result<RequestBody<'de>, A::Error> {
    let mut r = RequestBody {
        object: true,
        ..RequestBody::default()
    };
    while let Some(k) = map.next_key_seed(Key)? {
        let want = match (&*k, examples) {
            ("signature_name", _) => Want::Str,
            ("examples", true) => Want::Len,
            ("instances", false) => Want::Rows,
            ("inputs", false) => Want::Columnar,
            _ => Want::Skip,
        };
        let got = map.next_value_seed(Skim { want })?;
        match want {
            Want::Str => r.signature = Some(text(got)),
            Want::Len => r.examples = Some(len(got)),
            Want::Rows => r.instances = Some(tensors(got)),
            Want::Columnar => r.inputs = Some(tensors(got).unwrap_or_default()),
            _ => {}
        }
    }
    Ok(r)
}

/// The members of a response body its route needs; a member given twice
/// counts as its last value.
#[derive(Debug, Default)]
pub struct ResponseBody<'de> {
    /// "error" if it is a string.
    pub error: Option<String>,
    /// Present, and its tensors if it is a list.
    pub predictions: Option<Option<Tensors<'de>>>,
    pub outputs: Option<Tensors<'de>>,
    /// Present, and the length if it is a list.
    pub results: Option<Option<u64>>,
    pub result: Option<Option<u64>>,
}

fn response<'de, A: MapAccess<'de>>(
    mut map: A,
    reply: Reply,
) -> Result<ResponseBody<'de>, A::Error> {
    let mut r = ResponseBody::default();
    while let Some(k) = map.next_key_seed(Key)? {
        let want = match (&*k, reply) {
            ("error", _) => Want::Str,
            ("predictions", Reply::Predict) => Want::Rows,
            ("outputs", Reply::Predict) => Want::Columnar,
            ("results" | "result", Reply::Results) => Want::Len,
            _ => Want::Skip,
        };
        let got = map.next_value_seed(Skim { want })?;
        match (want, &*k) {
            (Want::Str, _) => r.error = text(got),
            (Want::Rows, _) => r.predictions = Some(tensors(got)),
            (Want::Columnar, _) => r.outputs = Some(tensors(got).unwrap_or_default()),
            (Want::Len, "results") => r.results = Some(len(got)),
            (Want::Len, _) => r.result = Some(len(got)),
            _ => {}
        }
    }
    Ok(r)
}

fn text(got: Got) -> Option<String> {
    match got {
        Got::Str(s) => Some(s),
        _ => None,
    }
}

fn len(got: Got) -> Option<u64> {
    match got {
        Got::Len(n) => Some(n),
        _ => None,
    }
}

fn tensors(got: Got) -> Option<Tensors> {
    match got {
        Got::Tensors(t) => Some(t),
        _ => None,
    }
}

/// Parses a request body; the error is serde_json's, as `from_slice` gives it.
/// `examples`: the route is Classify or Regress.
pub fn read_request(body: &[u8], examples: bool) -> Result<RequestBody<'_>, serde_json::Error> {
    let got = read(body, Want::Request { examples })?;
    Ok(match got {
        Got::Request(r) => r,
        _ => RequestBody::default(),
    })
}

/// Parses a response body; the error is serde_json's, as `from_slice` gives it.
pub fn read_response(body: &[u8], reply: Reply) -> Result<ResponseBody<'_>, serde_json::Error> {
    let got = read(body, Want::Response(reply))?;
    Ok(match got {
        Got::Response(r) => r,
        _ => ResponseBody::default(),
    })
}

fn read(body: &[u8], want: Want) -> Result<Got<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let got = Skim { want }.deserialize(&mut de)?;
    de.end()?;
    Ok(got)
}
