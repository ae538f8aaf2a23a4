//! `tfwire extract`: the evidence, without the rest of the traffic. Writes
//! every packet of the TCP connections that carried a matching failed
//! exchange to a new pcapng file, with the original timestamps and lengths.
//!
//! Two passes over the files: the first analyses them (as `analyze` does,
//! with the same signature sources, so categories agree) and collects the
//! connection ids (`tcp.stream`) of the matching exchanges; the second
//! re-reads them through a `FlowTable` of its own, which numbers connections
//! exactly as the first pass did, and keeps the packets of those connections.
//! Whole connections are kept because HTTP/2 cannot be cut apart: every
//! stream's headers depend on the HPACK state built by all earlier ones, and
//! a TCP stream with holes no longer decodes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::capture::{CaptureReader, LinkType, Packet};
use crate::net::{tcp_segment, ConnInfo, Delivery, Dir, FlowSink, FlowTable};
use crate::pipeline::Config;
use crate::report::postmortem::{analyze_files, SourceArgs, CATEGORIES, UNDIAGNOSED};
use crate::report::{escape_for_terminal, plural};
use crate::tfserving::Exchange;
use crate::{RunError, EXIT_CLEAN, EXIT_FAILURES};

#[derive(Debug, Clone, clap::Args)]
pub struct ExtractArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Where to write the packets (pcapng; '-' for standard output).
    #[arg(short = 'o', long = "output", value_name = "FILE", required = true)]
    pub output: PathBuf,

    /// Only failures of this diagnosis category, e.g. dtype_mismatch
    /// (repeatable; 'undiagnosed' for failures without a diagnosis).
    #[arg(long = "category", value_name = "C")]
    pub categories: Vec<String>,

    /// Only failures of requests to this model (repeatable).
    #[arg(long = "model", value_name = "M")]
    pub models: Vec<String>,

    /// Only failures of requests from this client address (repeatable).
    #[arg(long = "client", value_name = "IP")]
    pub clients: Vec<String>,
}

/// Which failed exchanges to keep: every given criterion must match (values
/// of one criterion are alternatives). No criterion: every failed exchange.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub categories: Vec<String>,
    pub models: Vec<String>,
    pub clients: Vec<IpAddr>,
}

impl Filter {
    /// Validates the arguments of `tfwire extract`.
    pub fn from_args(args: &ExtractArgs) -> Result<Filter, RunError> {
        for c in &args.categories {
            if !CATEGORIES.contains(&c.as_str()) {
                return Err(RunError(format!(
                    "unknown category '{}'; one of: {}",
                    c,
                    CATEGORIES.join(", ")
                )));
            }
        }
        let clients = args
            .clients
            .iter()
            .map(|c| {
                c.parse::<IpAddr>()
                    .or_else(|_| c.parse::<SocketAddr>().map(|a| a.ip()))
                    .map_err(|_| RunError(format!("--client {c}: not an IP address")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Filter {
            categories: args.categories.clone(),
            models: args.models.clone(),
            clients,
        })
    }

    /// A failed exchange that meets every criterion.
    pub fn matches(&self, ex: &Exchange) -> bool {
        if ex.status.ok {
            return false;
        }
        let category = ex.diagnosis.as_ref().map_or(UNDIAGNOSED, |d| d.category);
        let category_ok =
            self.categories.is_empty() || self.categories.iter().any(|c| c == category);
        let model_ok = self.models.is_empty()
            || ex
                .model
                .as_deref()
                .is_some_and(|m| self.models.iter().any(|w| w == m));
        let client_ok = self.clients.is_empty()
            || ex
                .client
                .parse::<SocketAddr>()
                .is_ok_and(|a| self.clients.contains(&a.ip()));
        category_ok && model_ok && client_ok
    }
}

/// A selected exchange, as listed after extraction.
#[derive(Debug, Clone)]
pub struct Selected {
    pub id: u64,
    pub request_id: Option<String>,
    pub category: &'static str,
    pub model: Option<String>,
    pub connection: u64,
    /// The display filter in the input files' numbering.
    pub wireshark_filter: String,
    /// The same filter in the output file's numbering (connections and
    /// frames renumbered), once written.
    pub new_filter: Option<String>,
    pub request_frames: Vec<u64>,
    /// Frame numbers in the output file.
    pub new_request_frames: Vec<u64>,
}

/// Selected exchanges listed by id (all are counted).
const MAX_LISTED: usize = 50;
/// Frame numbers remembered per listed exchange.
const MAX_LISTED_FRAMES: usize = 16;

/// What `extract` did.
#[derive(Debug, Clone, Default)]
pub struct Extraction {
    pub exchanges: u64,
    pub failures: u64,
    pub selected: u64,
    /// Connection ids (input numbering) of the selected exchanges.
    pub connections: Vec<u64>,
    pub packets_read: u64,
    pub packets_written: u64,
    /// Packets of a kept connection that pcapng cannot hold (link type
    /// above 65535).
    pub packets_unwritable: u64,
    /// The first `MAX_LISTED` selected exchanges.
    pub listed: Vec<Selected>,
}

/// Writes pcapng (little-endian): a Section Header Block, one Interface
/// Description Block per link type (nanosecond timestamps), one Enhanced
/// Packet Block per packet with its original timestamp and length.
pub struct PcapngWriter<W: Write> {
    out: W,
    interfaces: Vec<LinkType>,
}

const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const OPT_END: u16 = 0;
const SHB_USERAPPL: u16 = 4;
const IF_TSRESOL: u16 = 9;

impl<W: Write> PcapngWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut body = Vec::new();
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        // Section length not given.
        body.extend_from_slice(&(-1i64).to_le_bytes());
        let app = format!("tfwire {} extract", env!("CARGO_PKG_VERSION"));
        option(&mut body, SHB_USERAPPL, app.as_bytes());
        option(&mut body, OPT_END, &[]);
        block(&mut out, SHB, &body)?;
        Ok(PcapngWriter {
            out,
            interfaces: Vec::new(),
        })
    }

    /// Writes one packet; `Ok(false)` if pcapng cannot express its link type.
    pub fn packet(&mut self, p: &Packet<'_>) -> io::Result<bool> {
        let Ok(link) = u16::try_from(p.link.0) else {
            return Ok(false);
        };
        let if_id = match self.interfaces.iter().position(|l| *l == p.link) {
            Some(i) => i,
            None => {
                let mut body = Vec::new();
                body.extend_from_slice(&link.to_le_bytes());
                body.extend_from_slice(&0u16.to_le_bytes());
                // Snaplen 0: no limit.
                body.extend_from_slice(&0u32.to_le_bytes());
                option(&mut body, IF_TSRESOL, &[9]);
                option(&mut body, OPT_END, &[]);
                block(&mut self.out, IDB, &body)?;
                self.interfaces.push(p.link);
                self.interfaces.len() - 1
            }
        };
        let ts = u64::try_from(p.ts_ns).unwrap_or(0);
        let caplen = u32::try_from(p.data.len()).unwrap_or(u32::MAX);
        let data = &p.data[..caplen as usize];
        let mut body = Vec::with_capacity(20 + data.len() + 4);
        body.extend_from_slice(&(if_id as u32).to_le_bytes());
        body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts as u32).to_le_bytes());
        body.extend_from_slice(&caplen.to_le_bytes());
        body.extend_from_slice(&p.orig_len.max(caplen).to_le_bytes());
        body.extend_from_slice(data);
        body.resize(body.len().next_multiple_of(4), 0);
        block(&mut self.out, EPB, &body)?;
        Ok(true)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(value);
    body.resize(body.len().next_multiple_of(4), 0);
}

fn block(out: &mut impl Write, kind: u32, body: &[u8]) -> io::Result<()> {
    let len = (12 + body.len()) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&len.to_le_bytes())
}

/// Endpoints in canonical order, as the flow table keys connections.
fn canonical(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// Follows which connection id each 4-tuple currently belongs to, as the
/// flow table opens and closes connections (4-tuple reuse gives a new id).
struct ConnMap<'k> {
    keep: &'k HashSet<u64>,
    current: HashMap<(SocketAddr, SocketAddr), u64>,
    open: HashMap<u64, (SocketAddr, SocketAddr)>,
}

impl FlowSink for ConnMap<'_> {
    fn opened(&mut self, info: &ConnInfo) {
        let key = canonical(info.client, info.server);
        self.current.insert(key, info.id);
        self.open.insert(info.id, key);
    }

    fn data(&mut self, _conn: u64, _dir: Dir, _delivery: Delivery<'_>) {}

    fn closed(&mut self, conn: u64) {
        // A kept connection stays mapped: its last ACKs come after the close.
        // Others are forgotten, so memory follows open connections only.
        if let Some(key) = self.open.remove(&conn) {
            if !self.keep.contains(&conn) && self.current.get(&key) == Some(&conn) {
                self.current.remove(&key);
            }
        }
    }
}

/// `tcp.stream eq N` and `frame.number >= F` renumbered for the output file.
fn renumber_filter(
    filter: &str,
    conns: &HashMap<u64, u64>,
    frames: &HashMap<u64, u64>,
) -> Option<String> {
    let words: Vec<&str> = filter.split(' ').collect();
    let mut out = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let field = if i >= 2 {
            Some((words[i - 2], words[i - 1]))
        } else {
            None
        };
        let renumbered = match field {
            Some(("tcp.stream", "eq")) => Some(conns.get(&w.parse().ok()?)?.to_string()),
            Some(("frame.number", ">=")) => Some(frames.get(&w.parse().ok()?)?.to_string()),
            _ => None,
        };
        out.push(renumbered.unwrap_or_else(|| w.to_string()));
    }
    Some(out.join(" "))
}

/// Filter numbers that name frames (`frame.number >= F`).
fn filter_frames(filter: &str) -> Vec<u64> {
    let words: Vec<&str> = filter.split(' ').collect();
    words
        .windows(3)
        .filter(|w| w[0] == "frame.number" && w[1] == ">=")
        .filter_map(|w| w[2].parse().ok())
        .collect()
}

/// Runs both passes; the packets go to `out`.
pub fn extract(
    captures: &[PathBuf],
    config: Config,
    book: crate::diagnose::SignatureBook,
    filter: &Filter,
    out: impl Write,
) -> Result<Extraction, RunError> {
    if captures.iter().any(|p| p.as_os_str() == "-") {
        return Err(RunError(
            "extract reads the captures twice, so it cannot read standard input ('-'); save the capture to a file first".into(),
        ));
    }
    let mut x = Extraction::default();
    let mut keep: HashSet<u64> = HashSet::new();
    analyze_files(captures, config.clone(), book, |ex| {
        x.exchanges += 1;
        if !ex.status.ok {
            x.failures += 1;
        }
        if filter.matches(&ex) {
            x.selected += 1;
            keep.insert(ex.connection);
            if x.listed.len() < MAX_LISTED {
                let mut request_frames = ex.request_frames.clone();
                request_frames.truncate(MAX_LISTED_FRAMES);
                x.listed.push(Selected {
                    id: ex.id,
                    request_id: ex.request_id.clone(),
                    category: ex.diagnosis.as_ref().map_or(UNDIAGNOSED, |d| d.category),
                    model: ex.model.clone(),
                    connection: ex.connection,
                    wireshark_filter: ex.wireshark_filter.clone(),
                    new_filter: None,
                    request_frames,
                    new_request_frames: Vec::new(),
                });
            }
        }
    })?;
    let mut connections: Vec<u64> = keep.iter().copied().collect();
    connections.sort_unstable();
    x.connections = connections;

    // Second pass: the same flow table numbering, packets of kept connections out.
    let wanted_frames: HashSet<u64> = x
        .listed
        .iter()
        .flat_map(|s| {
            s.request_frames
                .iter()
                .copied()
                .chain(filter_frames(&s.wireshark_filter))
        })
        .collect();
    let mut frame_map: HashMap<u64, u64> = HashMap::new();
    let mut conn_map: HashMap<u64, u64> = HashMap::new();
    let mut ports = config.grpc_ports.clone();
    ports.extend(&config.rest_ports);
    let mut flows = FlowTable::new(ports, config.flow);
    let mut map = ConnMap {
        keep: &keep,
        current: HashMap::new(),
        open: HashMap::new(),
    };
    let mut writer = PcapngWriter::new(out).map_err(|e| RunError(format!("writing: {e}")))?;
    let mut write_error: Option<io::Error> = None;
    let mut frame = 1u64;
    for path in captures {
        let mut reader = CaptureReader::open(path).map_err(|e| RunError(e.to_string()))?;
        frame = reader.for_each_packet(frame, |p, _| {
            x.packets_read += 1;
            let Ok(seg) = tcp_segment(p.link, p.data) else {
                return;
            };
            flows.segment(&seg, p.frame, p.ts_ns, &mut map);
            let Some(&conn) = map.current.get(&canonical(seg.src, seg.dst)) else {
                return;
            };
            if !keep.contains(&conn) || write_error.is_some() {
                return;
            }
            match writer.packet(p) {
                Ok(true) => {
                    x.packets_written += 1;
                    let next = conn_map.len() as u64;
                    conn_map.entry(conn).or_insert(next);
                    if wanted_frames.contains(&p.frame) {
                        frame_map.insert(p.frame, x.packets_written);
                    }
                }
                Ok(false) => x.packets_unwritable += 1,
                Err(e) => write_error = Some(e),
            }
        });
    }
    flows.finish(&mut map);
    if let Some(e) = write_error {
        return Err(RunError(format!("writing: {e}")));
    }
    writer
        .finish()
        .map_err(|e| RunError(format!("writing: {e}")))?;
    for s in &mut x.listed {
        s.new_filter = renumber_filter(&s.wireshark_filter, &conn_map, &frame_map);
        s.new_request_frames = s
            .request_frames
            .iter()
            .filter_map(|f| frame_map.get(f).copied())
            .collect();
    }
    Ok(x)
}

/// `tfwire extract`: returns 1 when matching failures were written, 0 when
/// none matched (the output then holds no packets), as `analyze` does.
pub fn run_extract(args: ExtractArgs) -> Result<u8, RunError> {
    let filter = Filter::from_args(&args)?;
    let book = crate::load_book(&args.source.model_dirs, &args.source.signature_files)?;
    let to_stdout = args.output.as_os_str() == "-";
    let name = escape_for_terminal(&args.output.display().to_string());
    let x = if to_stdout {
        extract(
            &args.source.captures,
            args.source.config(),
            book,
            &filter,
            BufWriter::new(io::stdout().lock()),
        )?
    } else {
        // Refuse to overwrite an input: it is read twice.
        for c in &args.source.captures {
            if same_file(c, &args.output) {
                return Err(RunError(format!(
                    "{name}: the output is one of the input captures"
                )));
            }
        }
        let file = File::create(&args.output).map_err(|e| RunError(format!("{name}: {e}")))?;
        extract(
            &args.source.captures,
            args.source.config(),
            book,
            &filter,
            BufWriter::new(file),
        )?
    };
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "tfwire: {} of {} failed {} matched; wrote {} of {} {} ({} TCP {}) to {name}{}",
        x.selected,
        x.failures,
        plural(x.failures, "exchange", "exchanges"),
        x.packets_written,
        x.packets_read,
        plural(x.packets_read, "packet", "packets"),
        x.connections.len(),
        plural(x.connections.len(), "connection", "connections"),
        if x.listed.is_empty() {
            ""
        } else {
            "; their display filters there:"
        }
    );
    if x.packets_unwritable > 0 {
        let _ = writeln!(
            err,
            "tfwire: warning: {} {} a link type pcapng cannot record; left out",
            x.packets_unwritable,
            plural(x.packets_unwritable, "packet has", "packets have")
        );
    }
    let mut by_category: BTreeMap<&str, u64> = BTreeMap::new();
    for s in &x.listed {
        *by_category.entry(s.category).or_default() += 1;
    }
    for s in &x.listed {
        let _ = writeln!(
            err,
            "  #{} {} {} {}: {}{}",
            s.id,
            escape_for_terminal(s.request_id.as_deref().unwrap_or("-")),
            s.category,
            escape_for_terminal(s.model.as_deref().unwrap_or("?")),
            s.new_filter
                .as_deref()
                .map(escape_for_terminal)
                .unwrap_or_else(|| "?".into()),
            match s.new_request_frames.as_slice() {
                [] => String::new(),
                [f] => format!(" (request frame {f})"),
                [f, .., l] => format!(" (request frames {f}–{l})"),
            }
        );
    }
    if x.selected > x.listed.len() as u64 {
        let _ = writeln!(err, "  … and {} more", x.selected - x.listed.len() as u64);
    }
    Ok(if x.selected > 0 {
        EXIT_FAILURES
    } else {
        EXIT_CLEAN
    })
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_renumbered() {
        let conns = HashMap::from([(3, 0)]);
        let frames = HashMap::from([(120, 7)]);
        assert_eq!(
            renumber_filter("tcp.stream eq 3 && http2.streamid eq 11", &conns, &frames).as_deref(),
            Some("tcp.stream eq 0 && http2.streamid eq 11")
        );
        assert_eq!(
            renumber_filter("tcp.stream eq 3 && frame.number >= 120", &conns, &frames).as_deref(),
            Some("tcp.stream eq 0 && frame.number >= 7")
        );
        assert_eq!(
            filter_frames("tcp.stream eq 3 && frame.number >= 120"),
            vec![120]
        );
        assert_eq!(renumber_filter("tcp.stream eq 4", &conns, &frames), None);
    }

    #[test]
    fn written_pcapng_reads_back() {
        let data = [0u8; 54];
        let mut buf = Vec::new();
        {
            let mut w = PcapngWriter::new(&mut buf).expect("shb");
            for (i, link) in [LinkType::ETHERNET, LinkType::LINUX_SLL2, LinkType::ETHERNET]
                .into_iter()
                .enumerate()
            {
                let p = Packet {
                    frame: i as u64 + 1,
                    ts_ns: 1_795_788_184_123_456_789 + i as i64,
                    link,
                    data: &data[..50 + i],
                    orig_len: 1500,
                };
                assert!(w.packet(&p).expect("epb"));
            }
            w.finish().expect("flush");
        }
        let mut r = CaptureReader::from_reader("mem".into(), io::Cursor::new(buf)).expect("open");
        let mut got = Vec::new();
        r.for_each_packet(1, |p, _| {
            got.push((p.ts_ns, p.link, p.data.len(), p.orig_len))
        });
        assert_eq!(
            got,
            vec![
                (1_795_788_184_123_456_789, LinkType::ETHERNET, 50, 1500),
                (1_795_788_184_123_456_790, LinkType::LINUX_SLL2, 51, 1500),
                (1_795_788_184_123_456_791, LinkType::ETHERNET, 52, 1500),
            ]
        );
        assert!(r.stats().cut_short.is_none());
    }
}
