//! Generates the protobuf types from `proto/` with protox (pure Rust), so the
//! build needs no system `protoc`.

use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut files = Vec::new();
    collect(Path::new("proto"), &mut files)?;
    files.sort();
    let fds = protox::compile(&files, ["proto"])?;
    prost_build::Config::new()
        // Bytes fields become `bytes::Bytes`: slices of the received message, no copies.
        .bytes(["."])
        .compile_fds(fds)?;
    Ok(())
}
