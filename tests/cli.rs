//! The binary as users run it: exit statuses, stdin, errors.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{fixture, tfwire_bin};

#[test]
fn jsonl_ends_with_summary_and_exit_status_reports_failures() {
    let out = Command::new(tfwire_bin())
        .args(["analyze", "--format", "jsonl"])
        .arg(fixture("grpc_basic.pcapng"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "failures found → exit 1");
    let text = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let last = lines.last().expect("summary");
    assert_eq!(last["type"], "summary");
    assert_eq!(last["exchanges"].as_u64(), Some(lines.len() as u64 - 1));
    assert!(last["failures"].as_u64().unwrap_or(0) > 0);
    assert!(lines[..lines.len() - 1]
        .iter()
        .all(|l| l["type"] == "exchange"));
}

#[test]
fn clean_capture_exits_zero() {
    let out = Command::new(tfwire_bin())
        .args(["analyze", "-f", "summary"])
        .arg(fixture("grpc_large.pcapng"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary json");
    assert_eq!(s["exchanges"], 2);
    assert_eq!(s["failures"], 0);
}

#[test]
fn reads_standard_input() {
    let bytes = std::fs::read(fixture("grpc_compressed.pcap")).expect("fixture");
    let mut child = Command::new(tfwire_bin())
        .args(["analyze", "-f", "summary", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    // Dribble the bytes in small writes, like a pipe from tcpdump would.
    let writer = std::thread::spawn(move || {
        for chunk in bytes.chunks(777) {
            stdin.write_all(chunk).expect("write");
        }
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary json");
    assert_eq!(s["exchanges"], 9);
}

#[test]
fn not_a_capture_is_one_line_and_status_2() {
    let out = Command::new(tfwire_bin())
        .args(["analyze"])
        .arg(fixture("grpc_basic.pcapng.truth.json"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).expect("utf8");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not a pcap or pcapng capture"), "{err}");
    assert!(out.stdout.is_empty());

    let out = Command::new(tfwire_bin())
        .args(["analyze", "/nonexistent/x.pcap"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn closed_pipe_ends_quietly() {
    let mut child = Command::new(tfwire_bin())
        .args(["analyze", "-f", "jsonl"])
        .arg(fixture("grpc_concurrent.pcapng"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Read one line, then close the pipe like `head -1`.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 64];
    let _ = std::io::Read::read(&mut stdout, &mut first);
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "stderr: {err}");
    assert_ne!(out.status.code(), Some(2));
    assert!(out.status.code().is_some(), "killed by a signal");
}

#[test]
fn table_view_lists_failures_and_causes() {
    let out = Command::new(tfwire_bin())
        .args(["analyze", "--format", "table"])
        .arg(fixture("grpc_basic.pcapng"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("INVALID_ARGUMENT"), "{text}");
    assert!(text.contains("dtype_mismatch (certain)"), "{text}");
    assert!(
        text.contains("failures,") && text.contains("causes:"),
        "{text}"
    );
    assert!(text.contains("exchanges,"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes with NO_COLOR / not a tty"
    );
}

#[test]
fn limits_are_configurable_and_reported_when_hit() {
    let out = Command::new(tfwire_bin())
        .args(["analyze", "-f", "summary", "--max-open-streams", "2"])
        .arg(fixture("grpc_concurrent.pcapng"))
        .output()
        .expect("run");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary json");
    assert!(
        s["limits_hit"]["streams_open"].as_u64().unwrap_or(0) > 0,
        "{s}"
    );
    assert!(s["exchanges"].as_u64().unwrap_or(0) < 80);

    let out = Command::new(tfwire_bin())
        .args(["analyze", "-f", "summary"])
        .arg(fixture("grpc_concurrent.pcapng"))
        .output()
        .expect("run");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary json");
    assert_eq!(
        s["limits_hit"],
        serde_json::json!({}),
        "no limit hit by default"
    );
}

/// A pseudo-terminal that reports 0 columns (`script` without a terminal
/// behind it, some CI runners) used to get one-character table columns.
#[cfg(target_os = "linux")]
#[test]
fn table_on_a_zero_width_terminal_falls_back_to_columns() {
    let cmd = format!(
        "{} analyze --no-progress -f table {}",
        tfwire_bin().display(),
        fixture("grpc_basic.pcapng").display()
    );
    // stdin is not a terminal, so `script` leaves its pseudo-terminal 0×0.
    let out = match Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("COLUMNS", "100")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if !out.stdout.is_empty() => out,
        _ => {
            eprintln!("skipped: util-linux `script` cannot run here");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text
        .lines()
        .find(|l| l.contains('#'))
        .unwrap_or_else(|| panic!("no header row:\n{text}"));
    assert!(
        header.contains("call") && header.contains("diagnosis"),
        "{header}"
    );
    let widest = text
        .lines()
        .filter(|l| l.starts_with(['┌', '│', '╞', '└']))
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    assert!((90..=100).contains(&widest), "table {widest} wide:\n{text}");
}
