//! tfwire benchmark tools (issue 7). See `benches/run.sh`.

pub mod gencap;
