//! Root-cause diagnosis of failed exchanges.

use serde::Serialize;

/// How sure a diagnosis is (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Possible,
    Likely,
    Certain,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub category: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_dtype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_dtype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_shape: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_shape: Option<Vec<i64>>,
    pub summary: String,
    pub fix: String,
    pub evidence: Vec<String>,
    pub confidence: Confidence,
}
