//! Loading signatures from outside the capture: a SavedModel directory
//! (`saved_model.pb`) or the JSON that TF Serving's REST metadata endpoint returns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use serde_json::Value;

use crate::tfserving::pb::tensorflow::SavedModel;
use crate::tfserving::{signature, Signature, SignatureMap, TensorSpec};

/// Signatures of one model version loaded from a file.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub model: String,
    pub version: Option<i64>,
    pub signatures: SignatureMap,
    pub path: PathBuf,
}

/// Largest saved_model.pb read (graphs of big models run to hundreds of MB;
/// signatures sit in the same message).
const MAX_SAVED_MODEL: u64 = 2 << 30;

/// Loads `--model-dir`: a version directory holding `saved_model.pb`, or a
/// model base directory with numbered version subdirectories. `NAME=DIR`
/// names the model; otherwise the base directory's name is used.
pub fn load_model_dir(arg: &str) -> Result<Vec<Loaded>, String> {
    let (name, dir) = match arg.split_once('=') {
        Some((n, d)) if !n.is_empty() && !Path::new(arg).exists() => {
            (Some(n.to_string()), PathBuf::from(d))
        }
        _ => (None, PathBuf::from(arg)),
    };
    if dir.join("saved_model.pb").is_file() {
        let version = dir
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.parse::<i64>().ok());
        let base = if version.is_some() {
            dir.parent()
        } else {
            Some(dir.as_path())
        };
        let model = name
            .or_else(|| {
                base.and_then(|b| b.file_name())
                    .and_then(|f| f.to_str())
                    .map(str::to_string)
            })
            .ok_or_else(|| {
                format!(
                    "{}: cannot tell the model name; use NAME=DIR",
                    dir.display()
                )
            })?;
        let pb = dir.join("saved_model.pb");
        return Ok(vec![Loaded {
            model,
            version,
            signatures: read_saved_model(&pb)?,
            path: pb,
        }]);
    }
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut versions: Vec<(i64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<i64>().ok()?;
            let pb = e.path().join("saved_model.pb");
            pb.is_file().then_some((v, pb))
        })
        .collect();
    versions.sort();
    if versions.is_empty() {
        // A model base path holding several models (TF Serving's
        // --model_config_file layout): load each model directory in it.
        if name.is_none() {
            let mut all = Vec::new();
            let mut subdirs: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            subdirs.sort();
            for sub in subdirs {
                if let Some(s) = sub.to_str() {
                    if let Ok(mut loaded) = load_model_dir(s) {
                        all.append(&mut loaded);
                    }
                }
            }
            if !all.is_empty() {
                return Ok(all);
            }
        }
        return Err(format!(
            "{}: no saved_model.pb here, in numbered version subdirectories, or in model directories",
            dir.display()
        ));
    }
    let model = name
        .or_else(|| dir.file_name().and_then(|f| f.to_str()).map(str::to_string))
        .ok_or_else(|| {
            format!(
                "{}: cannot tell the model name; use NAME=DIR",
                dir.display()
            )
        })?;
    versions
        .into_iter()
        .map(|(v, pb)| {
            Ok(Loaded {
                model: model.clone(),
                version: Some(v),
                signatures: read_saved_model(&pb)?,
                path: pb,
            })
        })
        .collect()
}

/// Signatures of the meta graph tagged `serve` (the one TF Serving loads).
pub fn read_saved_model(path: &Path) -> Result<SignatureMap, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_SAVED_MODEL {
        return Err(format!("{}: larger than 2 GiB", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let sm = SavedModel::decode(bytes.as_slice())
        .map_err(|e| format!("{}: not a SavedModel ({e})", path.display()))?;
    let graph = sm
        .meta_graphs
        .iter()
        .find(|g| {
            g.meta_info_def
                .as_ref()
                .is_some_and(|m| m.tags.iter().any(|t| t == "serve"))
        })
        .or_else(|| (sm.meta_graphs.len() == 1).then(|| &sm.meta_graphs[0]))
        .ok_or_else(|| format!("{}: no meta graph tagged 'serve'", path.display()))?;
    Ok(signature::map_from_proto(&graph.signature_def))
}

/// Parses the REST metadata JSON (`GET /v1/models/M[/versions/V]/metadata`),
/// or a bare SignatureDefMap JSON. Returns (model, version, signatures).
pub fn parse_metadata_json(
    v: &Value,
) -> Result<(Option<String>, Option<i64>, SignatureMap), String> {
    let spec = v.get("model_spec");
    let model = spec
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let version = spec.and_then(|s| s.get("version")).and_then(int);
    let defs = v
        .pointer("/metadata/signature_def/signature_def")
        .or_else(|| v.pointer("/signature_def/signature_def"))
        .or_else(|| v.get("signature_def"))
        .unwrap_or(v);
    let obj = defs
        .as_object()
        .ok_or("no signature_def object in the metadata JSON")?;
    let mut map = BTreeMap::new();
    for (name, def) in obj {
        if name.starts_with('@') {
            continue;
        }
        let Some(def) = def.as_object() else {
            continue;
        };
        let specs = |key: &str| -> Vec<TensorSpec> {
            let mut out: Vec<TensorSpec> = def
                .get(key)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(alias, info)| tensor_spec(alias, info))
                        .collect()
                })
                .unwrap_or_default();
            out.sort_by(|a, b| a.alias.cmp(&b.alias));
            out
        };
        let mut defaults: Vec<String> = def
            .get("defaults")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        defaults.sort();
        map.insert(
            name.clone(),
            Signature {
                method_name: def
                    .get("method_name")
                    .or_else(|| def.get("methodName"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                inputs: specs("inputs"),
                outputs: specs("outputs"),
                defaults,
            },
        );
    }
    if map.is_empty() {
        return Err("the metadata JSON lists no signatures".into());
    }
    Ok((model, version, map))
}

/// proto3 JSON writes int64 as strings.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn tensor_spec(alias: &str, info: &Value) -> TensorSpec {
    let shape_v = info.get("tensor_shape").or_else(|| info.get("tensorShape"));
    let unknown_rank = shape_v
        .and_then(|s| s.get("unknown_rank").or_else(|| s.get("unknownRank")))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let shape = if unknown_rank {
        None
    } else {
        shape_v.map(|s| {
            s.get("dim")
                .and_then(Value::as_array)
                .map(|dims| {
                    dims.iter()
                        .map(|d| d.get("size").and_then(int).unwrap_or(0))
                        .collect()
                })
                .unwrap_or_default()
        })
    };
    TensorSpec {
        alias: alias.to_string(),
        dtype: info
            .get("dtype")
            .and_then(Value::as_str)
            .map(str::to_string),
        shape,
        tensor_name: info.get("name").and_then(Value::as_str).map(str::to_string),
    }
}

/// Loads `--signatures FILE`.
pub fn load_signatures_file(
    path: &Path,
) -> Result<(Option<String>, Option<i64>, SignatureMap), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON ({e})", path.display()))?;
    parse_metadata_json(&v).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_metadata_json() {
        let v: Value = serde_json::from_str(
            r#"{"model_spec":{"name":"fraud","signature_name":"","version":"1"},
                "metadata":{"signature_def":{"signature_def":{
                  "serving_default":{"inputs":{"features":{"dtype":"DT_FLOAT",
                     "tensor_shape":{"dim":[{"size":"-1","name":""},{"size":"10","name":""}],"unknown_rank":false},
                     "name":"serving_default_features:0"}},
                   "outputs":{"scores":{"dtype":"DT_FLOAT","tensor_shape":{"dim":[{"size":"-1","name":""},{"size":"1","name":""}],"unknown_rank":false},"name":"StatefulPartitionedCall:0"}},
                   "method_name":"tensorflow/serving/predict"}},
                  "@type":"type.googleapis.com/tensorflow.serving.SignatureDefMap"}}}"#,
        )
        .expect("json");
        let (m, ver, map) = parse_metadata_json(&v).expect("parse");
        assert_eq!(m.as_deref(), Some("fraud"));
        assert_eq!(ver, Some(1));
        let s = &map["serving_default"];
        assert_eq!(s.inputs[0].alias, "features");
        assert_eq!(s.inputs[0].dtype.as_deref(), Some("DT_FLOAT"));
        assert_eq!(s.inputs[0].shape, Some(vec![-1, 10]));
        assert_eq!(
            s.inputs[0].tensor_name.as_deref(),
            Some("serving_default_features:0")
        );
        assert_eq!(s.method_name, "tensorflow/serving/predict");
    }
}
