//! Command-line flags (clap) and their validation into run options. No clap
//! type travels past this module.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::pipeline::Config;

#[derive(Debug, Parser)]
#[command(
    name = "tfwire",
    version,
    about = "Reads TensorFlow Serving traffic off the wire and explains why requests were rejected",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode TF Serving exchanges in pcap/pcapng captures ('-' reads standard input).
    Analyze(AnalyzeArgs),
    /// Print a model's signatures from a SavedModel directory or a metadata JSON file.
    Signature(SignatureArgs),
    /// Capture from a network interface and explain failures as they happen
    /// (needs a build with --features live).
    Live(crate::live::LiveArgs),
    /// Write a postmortem report (self-contained HTML, or Markdown) of captures.
    Report(crate::report::postmortem::ReportArgs),
    /// Write the packets of the failed exchanges' connections to a new pcapng.
    Extract(crate::extract::ExtractArgs),
}

#[derive(Debug, clap::Args)]
pub struct SignatureArgs {
    /// SavedModel dir (version dir or model base dir; NAME=DIR names it), or
    /// the JSON of GET /v1/models/<m>/metadata.
    #[arg(value_name = "MODEL_DIR|METADATA_JSON")]
    pub source: String,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One row per failed exchange, then the root causes (default on a terminal).
    Table,
    /// One JSON object per exchange, then a summary object (default when piped).
    Jsonl,
    /// Only the closing summary object.
    Summary,
}

#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Capture files (pcap or pcapng); '-' for standard input. Several files of
    /// one rotated capture are read in the order given; frame and tcp.stream
    /// numbers then count through them as in `mergecap -a` of the files.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,

    /// Output format [default: table on a terminal, jsonl otherwise]
    #[arg(long, short = 'f', value_enum)]
    pub format: Option<Format>,

    /// TCP port of the gRPC API (repeatable). Connections starting with the
    /// HTTP/2 preface are decoded on any port.
    #[arg(long = "grpc-port", value_name = "PORT", default_values_t = [8500u16])]
    pub grpc_ports: Vec<u16>,

    /// TCP port of the REST API (repeatable).
    #[arg(long = "rest-port", value_name = "PORT", default_values_t = [8501u16])]
    pub rest_ports: Vec<u16>,

    /// A SavedModel directory (version dir with saved_model.pb, or a model
    /// base dir with numbered versions) whose signatures are the reference;
    /// NAME=DIR names the model. Repeatable.
    #[arg(long = "model-dir", value_name = "[NAME=]DIR")]
    pub model_dirs: Vec<String>,

    /// JSON returned by GET /v1/models/<m>[/versions/<v>]/metadata. Repeatable.
    #[arg(long = "signatures", value_name = "FILE")]
    pub signature_files: Vec<PathBuf>,

    /// Table view: list successful exchanges too.
    #[arg(long)]
    pub all: bool,

    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Largest gRPC message decoded, in bytes (also caps decompressed size).
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    pub max_message_bytes: usize,

    /// Out-of-order bytes buffered per TCP direction before declaring a gap.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub max_flow_buffer: usize,

    /// Open TCP connections tracked at once (idlest closed first past this).
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    pub max_flows: usize,

    /// Open gRPC streams tracked per connection (more are counted, not decoded).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_open_streams: usize,

    /// HTTP/1 (REST) body bytes kept per message, also after gzip decoding.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_body_bytes: usize,

    /// Decompressed gRPC message bytes held at once, all connections together.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    pub max_decompressed_held: usize,

    /// Threads analysing connections in parallel. 0 (the default): one per
    /// CPU, at most 8; a larger N is capped at 64. The output is the same for
    /// any number; standard input uses one.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 0)]
    pub threads: usize,
}

/// Every thread reads the whole capture, so past a few the reading repeated
/// outweighs the work shared: the default stops at `AUTO_THREADS`.
const AUTO_THREADS: usize = 8;
const MAX_THREADS: usize = 64;

/// Validated options of `tfwire analyze`.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    pub captures: Vec<PathBuf>,
    pub format: Format,
    pub config: Config,
    pub all: bool,
    pub model_dirs: Vec<String>,
    pub signature_files: Vec<PathBuf>,
    pub progress: bool,
    pub color: bool,
    /// Worker threads (at least 1).
    pub threads: usize,
}

impl AnalyzeArgs {
    pub fn validate(self) -> Result<AnalyzeOptions, String> {
        if self
            .captures
            .iter()
            .filter(|p| p.as_os_str() == "-")
            .count()
            > 1
        {
            return Err("standard input ('-') can be given only once".into());
        }
        if self.max_message_bytes == 0
            || self.max_flows == 0
            || self.max_open_streams == 0
            || self.max_body_bytes == 0
        {
            return Err("limits must be greater than zero".into());
        }
        let stdout_tty = std::io::stdout().is_terminal();
        let format = self.format.unwrap_or(if stdout_tty {
            Format::Table
        } else {
            Format::Jsonl
        });
        let mut config = Config {
            grpc_ports: self.grpc_ports,
            rest_ports: self.rest_ports,
            ..Config::default()
        };
        config.grpc.messages.max_message = self.max_message_bytes;
        config.flow.reassembly.max_buffered_bytes = self.max_flow_buffer;
        config.flow.max_flows = self.max_flows;
        config.grpc.max_open_calls = self.max_open_streams;
        config.http1.max_body = self.max_body_bytes;
        config.grpc.messages.max_decompressed_held = self.max_decompressed_held;
        Ok(AnalyzeOptions {
            captures: self.captures,
            format,
            config,
            all: self.all,
            model_dirs: self.model_dirs,
            signature_files: self.signature_files,
            progress: !self.no_progress && std::io::stderr().is_terminal(),
            color: stdout_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            threads: match self.threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(AUTO_THREADS)),
                n => n.min(MAX_THREADS),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The caps in `--threads`' help are the ones `validate` applies.
    #[test]
    fn threads_help_states_the_caps() {
        let mut cmd = Cli::command();
        let analyze = cmd.find_subcommand_mut("analyze").expect("analyze");
        let help = analyze.render_long_help().to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            help.contains(&format!("one per CPU, at most {AUTO_THREADS}")),
            "{help}"
        );
        assert!(help.contains(&format!("capped at {MAX_THREADS}")), "{help}");
        assert!(help.contains("[default: 0]"), "{help}");
    }
}
