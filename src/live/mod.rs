//! `tfwire live`: sniffs a serving port through libpcap and prints every
//! exchange, with its diagnosis, as soon as its response completes.
//!
//! The packets go through the same `pipeline::Analyzer` and
//! `diagnose::Engine` as `tfwire analyze`, so a capture saved with `--write`
//! and analysed later gives the same exchanges. Live-only concerns live here:
//! opening the interface and its BPF filter (`capture`), writing the pcapng
//! copy (`pcapng`), dropping root (`privileges`) and streaming output with a
//! status line (`output`).
//!
//! Capturing needs the cargo feature `live` (libpcap). Without it the
//! subcommand still parses, and says how to build with it.

mod options;
pub mod pcapng;

#[cfg(all(feature = "live", unix))]
mod capture;
#[cfg(all(feature = "live", unix))]
mod output;
#[cfg(all(feature = "live", unix))]
mod privileges;

use std::path::PathBuf;

use clap::ValueEnum;

pub use options::{port_filter, LiveOptions, UserChoice};

use crate::RunError;

/// Output format of `tfwire live`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LiveFormat {
    /// One line per exchange as it completes (failures add the server's
    /// message, the diagnosis and the fix), then the summary.
    Table,
    /// One JSON object per exchange, flushed per line, then a summary object.
    Jsonl,
}

/// Flags of `tfwire live`.
#[derive(Debug, Clone, clap::Args)]
pub struct LiveArgs {
    /// Interface to capture on; 'any' captures on all interfaces (Linux)
    /// [default: libpcap's default device]
    #[arg(short = 'i', long, value_name = "IFACE")]
    pub interface: Option<String>,

    /// TCP port of the gRPC API (repeatable).
    #[arg(short = 'p', long = "port", value_name = "PORT", default_values_t = [8500u16])]
    pub grpc_ports: Vec<u16>,

    /// TCP port of the REST API (repeatable).
    #[arg(long = "rest-port", value_name = "PORT", default_values_t = [8501u16])]
    pub rest_ports: Vec<u16>,

    /// BPF filter to capture with instead of the one built from the ports.
    #[arg(long, value_name = "BPF")]
    pub filter: Option<String>,

    /// List the interfaces libpcap can capture on, and exit.
    #[arg(long)]
    pub list_interfaces: bool,

    /// Output format [default: table on a terminal, jsonl otherwise]
    #[arg(long, short = 'f', value_enum)]
    pub format: Option<LiveFormat>,

    /// Table view: print only failed exchanges (and successes with warnings).
    #[arg(long)]
    pub failures_only: bool,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Stop after this many exchanges.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Also write the captured packets to this pcapng file (for `tfwire analyze` later).
    #[arg(long, short = 'w', value_name = "FILE.pcapng")]
    pub write: Option<PathBuf>,

    /// Close connections without packets for this long; their unanswered
    /// requests are reported then.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub idle_timeout: f64,

    /// After opening the capture, switch to this user (like tcpdump -Z)
    /// [default when run as root: 'tfwire', else 'nobody', if one exists]
    #[arg(long, short = 'Z', value_name = "NAME")]
    pub user: Option<String>,

    /// Keep root privileges after opening the capture.
    #[arg(long, conflicts_with = "user")]
    pub no_drop_privileges: bool,

    /// A SavedModel directory whose signatures are the reference; NAME=DIR
    /// names the model. Repeatable.
    #[arg(long = "model-dir", value_name = "[NAME=]DIR")]
    pub model_dirs: Vec<String>,

    /// JSON returned by GET /v1/models/<m>[/versions/<v>]/metadata. Repeatable.
    #[arg(long = "signatures", value_name = "FILE")]
    pub signature_files: Vec<PathBuf>,

    /// Bytes captured per packet.
    #[arg(long, value_name = "BYTES", default_value_t = 262_144)]
    pub snaplen: u32,

    /// Kernel capture buffer, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub buffer_size: u32,

    /// Put the interface in promiscuous mode (mirror/SPAN ports).
    #[arg(long)]
    pub promisc: bool,

    /// Never show the status line on stderr (shown on a terminal).
    #[arg(long)]
    pub no_status: bool,
}

/// Printed when the binary was built without libpcap support.
pub const BUILD_HINT: &str = "\
tfwire was built without live capture support.
Rebuild it with the 'live' feature (needs libpcap's headers, e.g. apt-get install libpcap-dev):
    cargo build --release --features live
or capture with tcpdump and pipe it in:
    tcpdump -i IFACE -U -w - 'tcp port 8500' | tfwire analyze -";

/// Runs `tfwire live`; returns the exit status (0 clean, 1 failures seen,
/// 2 the capture could not run).
pub fn run(args: LiveArgs) -> Result<u8, RunError> {
    #[cfg(all(feature = "live", unix))]
    {
        let opts = args.validate().map_err(RunError)?;
        capture::run(&opts)
    }
    #[cfg(not(all(feature = "live", unix)))]
    {
        let _ = args;
        if cfg!(feature = "live") {
            eprintln!("tfwire: live capture is only supported on Unix systems");
        } else {
            eprintln!("{BUILD_HINT}");
        }
        Ok(crate::EXIT_ERROR)
    }
}
