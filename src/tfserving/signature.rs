//! Model signatures in tfwire's own terms, from `SignatureDef` protos
//! (GetModelMetadata responses, saved_model.pb) or REST metadata JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dtype;
use super::pb::tensorflow::{tensor_info, SignatureDef, TensorInfo, TensorShapeProto};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub alias: String,
    /// TF enum name; null if the signature names a dtype outside the enum.
    pub dtype: Option<String>,
    /// Dims with -1 for unknown; null for unknown rank.
    pub shape: Option<Vec<i64>>,
    /// Graph tensor fed for this alias (`serving_default_x:0`): TF orders
    /// feeds by this name, which is what `arg[i]` in dtype errors counts.
    pub tensor_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub method_name: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Aliases that have a default value (newer TF), so may be left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub defaults: Vec<String>,
}

pub type SignatureMap = BTreeMap<String, Signature>;

fn shape_of(s: Option<&TensorShapeProto>) -> Option<Vec<i64>> {
    let s = s?;
    if s.unknown_rank {
        return None;
    }
    Some(s.dim.iter().map(|d| d.size).collect())
}

fn spec(alias: &str, info: &TensorInfo) -> TensorSpec {
    let tensor_name = match &info.encoding {
        Some(tensor_info::Encoding::Name(n)) => Some(n.clone()),
        Some(tensor_info::Encoding::CooSparse(c)) => Some(c.values_tensor_name.clone()),
        _ => None,
    };
    TensorSpec {
        alias: alias.to_string(),
        dtype: dtype::name(info.dtype).map(str::to_string),
        shape: shape_of(info.tensor_shape.as_ref()),
        tensor_name,
    }
}

impl Signature {
    pub fn from_proto(def: &SignatureDef) -> Signature {
        // prost maps are HashMaps; sort for stable output.
        let mut inputs: Vec<TensorSpec> = def.inputs.iter().map(|(a, i)| spec(a, i)).collect();
        inputs.sort_by(|a, b| a.alias.cmp(&b.alias));
        let mut outputs: Vec<TensorSpec> = def.outputs.iter().map(|(a, i)| spec(a, i)).collect();
        outputs.sort_by(|a, b| a.alias.cmp(&b.alias));
        let mut defaults: Vec<String> = def.defaults.keys().cloned().collect();
        defaults.sort();
        Signature {
            method_name: def.method_name.clone(),
            inputs,
            outputs,
            defaults,
        }
    }

    pub fn input(&self, alias: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|t| t.alias == alias)
    }

    /// [`Signature::input`] for a lookup per request tensor: linear overall.
    pub fn inputs_by_alias(&self) -> super::names::ByName<'_, TensorSpec> {
        super::names::ByName::new(&self.inputs, |t| t.alias.as_str())
    }
}

pub fn map_from_proto<'a>(
    defs: impl IntoIterator<Item = (&'a String, &'a SignatureDef)>,
) -> SignatureMap {
    defs.into_iter()
        .map(|(k, v)| (k.clone(), Signature::from_proto(v)))
        .collect()
}
