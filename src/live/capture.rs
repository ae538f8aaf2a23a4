//! The capture loop: libpcap in non-blocking mode, woken by poll(2).
//!
//! libpcap's read timeout is not guaranteed to end a read when no packet
//! arrives (pcap(3PCAP); Linux TPACKET_V3 is such a case), so a blocking read
//! could keep Ctrl-C waiting until the next packet. Instead the loop polls the
//! capture descriptor for at most
//! `POLL_MAX`: a signal interrupts poll at once (EINTR), and `--duration`,
//! idle-connection expiry and the status line get their turn even when no
//! packet arrives.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pcap::{Active, Capture, Device};

use super::output::{LiveSink, Phase, StatusLine, STATUS_EVERY};
use super::pcapng::PcapngWriter;
use super::privileges::{drop_privileges, Dropped};
use super::{port_filter, LiveFormat, LiveOptions};
use crate::capture::{LinkType, Packet};
use crate::diagnose::Engine;
use crate::pipeline::Analyzer;
use crate::report::summary::CaptureTotals;
use crate::report::Summary;
use crate::report::{escape_for_terminal, plural};
use crate::tfserving::exchange::rfc3339;
use crate::{load_book, RunError, EXIT_CLEAN, EXIT_FAILURES};

/// Longest single wait for packets. Signals cut it short; this bounds how
/// late a deadline, an expiry round or a status refresh can be.
const POLL_MAX: Duration = Duration::from_millis(200);
/// Packets read in one go before the loop looks at its clocks and flags.
const BATCH: usize = 1024;
/// How often idle connections are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// Batches read after the stop, to take in what was already captured.
const FINAL_BATCHES: usize = 64;
/// Linux libpcap honours nanosecond timestamps on every capture type.
const NANOSECONDS: bool = cfg!(target_os = "linux");

type Stdout = io::StdoutLock<'static>;

/// Why the capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Signal,
    Duration,
    Count,
    OutputClosed,
    CaptureError,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Signal => "signal",
            Stop::Duration => "duration",
            Stop::Count => "count",
            Stop::OutputClosed => "output_closed",
            Stop::CaptureError => "capture_error",
        }
    }
}

/// What was captured, for the status line and the summary.
#[derive(Debug, Default)]
struct Counters {
    packets: u64,
    bytes: u64,
    truncated: u64,
    first_ts: Option<i64>,
    last_ts: Option<i64>,
    expired: u64,
}

pub fn run(opts: &LiveOptions) -> Result<u8, RunError> {
    if opts.list_interfaces {
        return list_interfaces();
    }
    // Arguments and reference files first: a mistake fails before capturing.
    let book = load_book(&opts.model_dirs, &opts.signature_files)?;
    let device = pick_device(opts.interface.as_deref())?;
    let iface = device.name.clone();
    let (cap, link, filter) = open(device, opts)?;
    // The file is created while still privileged, like tcpdump -w with -Z.
    let recorder = match &opts.write {
        Some(path) => Recorder::create(path, link, opts.snaplen, &iface)?,
        None => Recorder::none(),
    };
    let dropped = drop_privileges(&opts.user)?;
    let stop = stop_on_signals()?;

    let user_note = match &dropped {
        Dropped::To(u) => format!(", running as {u}"),
        _ => String::new(),
    };
    eprintln!(
        "tfwire: listening on {} ({link}), filter: {}{user_note}",
        escape_for_terminal(&iface),
        escape_for_terminal(&filter)
    );
    if dropped == Dropped::NoUser {
        eprintln!(
            "tfwire: warning: still running as root: no 'tfwire' or 'nobody' user to switch to (--user NAME)"
        );
    }

    let sink = LiveSink::new(
        Engine::new(book),
        io::stdout().lock(),
        opts.format,
        opts.failures_only,
        opts.color,
        StatusLine::new(opts.status_line),
        opts.count,
    );
    let mut session = Session {
        cap,
        link,
        analyzer: Analyzer::new(opts.config.clone(), sink),
        recorder,
        frame: 0,
        counters: Counters::default(),
    };
    let started = Instant::now();
    let (stopped_by, capture_error) = session.run(opts, &iface, &stop, started);

    // What the kernel already captured before the stop still counts.
    if matches!(stopped_by, Stop::Signal | Stop::Duration) {
        for _ in 0..FINAL_BATCHES {
            if !matches!(session.drain(), Ok(true)) {
                break;
            }
        }
    }
    let pcap_stats = session.cap.stats().ok();
    session.analyzer.sink().rep.phase = Phase::Closing;
    session.analyzer.finish();
    session.recorder.finish();

    let Session {
        analyzer,
        recorder,
        counters,
        ..
    } = session;
    let net = analyzer.net_stats();
    let protocols = analyzer.proto_stats();
    let mut sink = analyzer.into_sink();
    let rep = &mut sink.rep;
    rep.summary.capture = CaptureTotals {
        packets: counters.packets,
        bytes: counters.bytes,
        truncated_packets: counters.truncated,
        first_packet: counters.first_ts.map(rfc3339),
        last_packet: counters.last_ts.map(rfc3339),
        ..CaptureTotals::default()
    };
    rep.summary.network = net;
    rep.summary.protocols = protocols;

    let elapsed = started.elapsed().as_secs_f64();
    let live = serde_json::json!({
        "interface": iface,
        "link_type": link.to_string(),
        "filter": filter,
        "snaplen": opts.snaplen,
        "stopped_by": stopped_by.name(),
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "received": pcap_stats.map(|s| s.received),
        "dropped": pcap_stats.map(|s| s.dropped),
        "if_dropped": pcap_stats.map(|s| s.if_dropped),
        "expired_connections": counters.expired,
        "written": opts.write.as_ref().map(|p| p.display().to_string()),
        "written_packets": recorder.packets(),
        "write_error": recorder.error,
        "user": match &dropped { Dropped::To(u) => Some(u.clone()), _ => None },
        "capture_error": capture_error,
    });
    let pcap_line = match pcap_stats {
        Some(s) => format!(
            "libpcap: {} received, {} dropped, {} dropped by the interface",
            s.received, s.dropped, s.if_dropped
        ),
        None => "libpcap: no statistics".to_string(),
    };
    let mut lines = vec![format!(
        "{pcap_line}; stopped by {} after {elapsed:.1} s",
        stopped_by.name().replace('_', " ")
    )];
    if let Some(path) = &opts.write {
        lines.push(format!(
            "wrote {} {} to {}",
            recorder.packets(),
            plural(recorder.packets(), "packet", "packets"),
            escape_for_terminal(&path.display().to_string())
        ));
    }
    let written = rep.finish(("live", live), &lines, opts.color);
    if opts.format == LiveFormat::Jsonl {
        // The human at the terminal sees the counts tcpdump would print.
        eprintln!(
            "tfwire: {} {} captured, {} {}, {} failed; {}",
            counters.packets,
            plural(counters.packets, "packet", "packets"),
            rep.summary.exchanges,
            plural(rep.summary.exchanges, "exchange", "exchanges"),
            rep.summary.failures,
            lines[0]
        );
    }
    if let Some(e) = &recorder.error {
        eprintln!("tfwire: warning: {}", escape_for_terminal(e));
    }
    if let Some(e) = capture_error {
        return Err(RunError(format!("{iface}: capture failed: {e}")));
    }
    if let Err(e) = written {
        if e.kind() != io::ErrorKind::BrokenPipe {
            return Err(RunError(format!("writing output: {e}")));
        }
    }
    Ok(if rep.summary.failures > 0 {
        EXIT_FAILURES
    } else {
        EXIT_CLEAN
    })
}

/// An open capture and everything that consumes its packets.
struct Session {
    cap: Capture<Active>,
    link: LinkType,
    analyzer: Analyzer<LiveSink<Stdout>>,
    recorder: Recorder,
    /// Frame number of the last packet (Wireshark's numbering of the --write file).
    frame: u64,
    counters: Counters,
}

impl Session {
    /// Captures until a signal, `--duration`, `--count`, a closed output or
    /// an error; returns why, and the error.
    fn run(
        &mut self,
        opts: &LiveOptions,
        iface: &str,
        stop: &AtomicBool,
        started: Instant,
    ) -> (Stop, Option<String>) {
        let deadline = opts.duration.map(|d| started + d);
        let mut next_expiry = started + EXPIRE_EVERY;
        let mut more = false;
        loop {
            if stop.load(Ordering::Relaxed) {
                return (Stop::Signal, None);
            }
            let rep = &self.analyzer.sink().rep;
            if rep.limit_reached() {
                return (Stop::Count, None);
            }
            if rep.output_closed() {
                return (Stop::OutputClosed, None);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return (Stop::Duration, None);
            }

            // Wait for packets, but not past the next thing the loop must do.
            let mut wait = if more { Duration::ZERO } else { POLL_MAX };
            if let Some(d) = deadline {
                wait = wait.min(d - now);
            }
            wait = wait.min(next_expiry.saturating_duration_since(now));
            if opts.status_line {
                wait = wait.min(STATUS_EVERY);
            }
            let ms = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.cap.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return (Stop::CaptureError, Some(format!("poll: {e}"))),
            }
            match self.drain() {
                Ok(full) => more = full,
                Err(e) => return (Stop::CaptureError, Some(e.to_string())),
            }
            self.recorder.flush();

            let now = Instant::now();
            if now >= next_expiry {
                self.expire(opts.idle_timeout);
                next_expiry = now + EXPIRE_EVERY;
            }
            let rep = &mut self.analyzer.sink().rep;
            if rep.status.due(now) {
                let text = status_text(iface, &self.counters, &rep.summary, self.cap.stats().ok());
                rep.status.draw(&text, now);
            }
        }
    }

    /// Reads the packets libpcap has ready (up to `BATCH`); true when the
    /// batch was full and more may be waiting.
    fn drain(&mut self) -> Result<bool, pcap::Error> {
        for _ in 0..BATCH {
            if self.analyzer.stopped() {
                return Ok(false);
            }
            let p = match self.cap.next_packet() {
                Ok(p) => p,
                Err(pcap::Error::TimeoutExpired) => return Ok(false),
                Err(e) => return Err(e),
            };
            self.frame += 1;
            let ts_ns = timestamp_ns(p.header);
            let orig_len = p.header.len;
            let c = &mut self.counters;
            c.packets += 1;
            c.bytes += p.data.len() as u64;
            if (p.data.len() as u64) < u64::from(orig_len) {
                c.truncated += 1;
            }
            c.first_ts.get_or_insert(ts_ns);
            c.last_ts = Some(ts_ns);
            self.recorder.packet(ts_ns, p.data, orig_len);
            self.analyzer.packet(&Packet {
                frame: self.frame,
                ts_ns,
                link: self.link,
                data: p.data,
                orig_len,
            });
        }
        Ok(true)
    }

    /// Closes connections silent for `idle`; their open calls are reported
    /// now, noted as expired.
    fn expire(&mut self, idle: Duration) {
        let cutoff = unix_now_ns().saturating_sub(duration_ns(idle));
        self.analyzer.sink().rep.phase = Phase::Expiring(idle);
        self.counters.expired += self.analyzer.expire_idle(cutoff) as u64;
        // Stuck calls on connections still busy with others: reported, but
        // not counted as expired connections.
        self.analyzer.expire_calls(cutoff);
        self.analyzer.sink().rep.phase = Phase::Running;
    }
}

fn timestamp_ns(h: &pcap::PacketHeader) -> i64 {
    // time_t and suseconds_t are i64 on every 64-bit Unix, i32 on some 32-bit ones.
    #[allow(clippy::unnecessary_cast)]
    let (sec, frac) = (h.ts.tv_sec as i64, h.ts.tv_usec as i64);
    let frac_ns = if NANOSECONDS {
        frac
    } else {
        frac.saturating_mul(1000)
    };
    sec.saturating_mul(1_000_000_000).saturating_add(frac_ns)
}

fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// pcap's DLT_ values are the file format's LINKTYPE_ values except for raw
/// IP (DLT_RAW is 12, or 14 on OpenBSD, where 12 is DLT_LOOP).
fn link_type_of(dlt: i32) -> LinkType {
    match dlt {
        12 if cfg!(target_os = "openbsd") => LinkType::LOOP,
        12 | 14 => LinkType::RAW,
        d => LinkType(u32::try_from(d).unwrap_or(u32::MAX)),
    }
}

/// DLT_EN10MB: the only link type whose filters may say `vlan` everywhere.
const DLT_EN10MB: i32 = 1;

fn open(
    device: Device,
    opts: &LiveOptions,
) -> Result<(Capture<Active>, LinkType, String), RunError> {
    let name = device.name.clone();
    let err = |e: pcap::Error| RunError(open_error(&name, &e));
    let inactive = Capture::from_device(device)
        .map_err(err)?
        .snaplen(opts.snaplen)
        .buffer_size(opts.buffer_size)
        .promisc(opts.promisc)
        // Hand each packet over as it arrives, not when a buffer block fills.
        .immediate_mode(true)
        .timeout(100);
    let inactive = if NANOSECONDS {
        inactive.precision(pcap::Precision::Nano)
    } else {
        inactive
    };
    let mut cap = inactive.open().map_err(err)?;
    let dlt = cap.get_datalink();
    let link = link_type_of(dlt.0);
    if link.name().is_none() {
        eprintln!(
            "tfwire: warning: {} has link type {} ({}), which tfwire does not decode",
            escape_for_terminal(&name),
            dlt.0,
            dlt.get_name().unwrap_or_default()
        );
    }
    let filter = match &opts.filter {
        Some(f) => f.clone(),
        None => {
            let mut ports = opts.config.grpc_ports.clone();
            ports.extend(&opts.config.rest_ports);
            port_filter(&ports, dlt.0 == DLT_EN10MB)
        }
    };
    cap.filter(&filter, true)
        .map_err(|e| RunError(format!("BPF filter {filter:?}: {e}")))?;
    let cap = cap.setnonblock().map_err(err)?;
    Ok((cap, link, filter))
}

fn open_error(name: &str, e: &pcap::Error) -> String {
    let text = e.to_string();
    let lower = text.to_lowercase();
    // One line: main() escapes control characters, newlines included.
    let hint = if lower.contains("permission") || lower.contains("not permitted") {
        "; capturing needs root (sudo) or the capabilities CAP_NET_RAW and CAP_NET_ADMIN: \
         sudo setcap cap_net_raw,cap_net_admin=eip \"$(command -v tfwire)\" (see docs/live.md)"
    } else if lower.contains("no such device") || lower.contains("doesn't exist") {
        "; tfwire live --list-interfaces shows the interfaces libpcap can open"
    } else {
        ""
    };
    format!("{name}: {text}{hint}")
}

fn pick_device(name: Option<&str>) -> Result<Device, RunError> {
    if let Some(n) = name {
        return Ok(Device::from(n));
    }
    Device::lookup()
        .map_err(|e| RunError(format!("finding a capture device: {e}")))?
        .ok_or_else(|| {
            RunError(
                "no capture device found; name one with -i (tfwire live --list-interfaces)".into(),
            )
        })
}

fn list_interfaces() -> Result<u8, RunError> {
    let devices = Device::list().map_err(|e| RunError(format!("listing interfaces: {e}")))?;
    let width = devices.iter().map(|d| d.name.len()).max().unwrap_or(0);
    let mut out = io::stdout().lock();
    let mut result = Ok(());
    for d in devices {
        let mut flags = Vec::new();
        if d.flags.is_up() {
            flags.push("up");
        }
        if d.flags.is_running() {
            flags.push("running");
        }
        if d.flags.is_loopback() {
            flags.push("loopback");
        }
        if d.flags.is_wireless() {
            flags.push("wireless");
        }
        let addrs: Vec<String> = d.addresses.iter().map(|a| a.addr.to_string()).collect();
        let mut line = format!(
            "{:width$}  {:22}  {}",
            escape_for_terminal(&d.name),
            flags.join(","),
            addrs.join(" ")
        );
        if let Some(desc) = &d.desc {
            line.push_str(&format!("  ({})", escape_for_terminal(desc)));
        }
        result = writeln!(out, "{}", line.trim_end());
        if result.is_err() {
            break;
        }
    }
    match result.and_then(|_| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(RunError(format!("writing output: {e}")))
        }
        _ => Ok(EXIT_CLEAN),
    }
}

/// SIGINT and SIGTERM ask the loop to stop; a second one while it finishes
/// ends the process at once (128 + signal, as a shell reports it).
fn stop_on_signals() -> Result<Arc<AtomicBool>, RunError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        let r = signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&stop)));
        r.map_err(|e| RunError(format!("installing signal handlers: {e}")))?;
    }
    Ok(stop)
}

fn status_text(iface: &str, c: &Counters, summary: &Summary, stats: Option<pcap::Stat>) -> String {
    let dropped = stats
        .map(|s| (u64::from(s.dropped) + u64::from(s.if_dropped)).to_string())
        .unwrap_or_else(|| "?".into());
    format!(
        "{}: {} {}, {} {}, {} failed, {} dropped",
        escape_for_terminal(iface),
        c.packets,
        plural(c.packets, "packet", "packets"),
        summary.exchanges,
        plural(summary.exchanges, "exchange", "exchanges"),
        summary.failures,
        dropped
    )
}

/// The `--write` copy of the capture. A write error stops the copy (with a
/// warning), not the analysis.
struct Recorder {
    path: Option<PathBuf>,
    writer: Option<PcapngWriter<BufWriter<File>>>,
    written: u64,
    dirty: bool,
    error: Option<String>,
}

impl Recorder {
    fn none() -> Recorder {
        Recorder {
            path: None,
            writer: None,
            written: 0,
            dirty: false,
            error: None,
        }
    }

    fn create(
        path: &Path,
        link: LinkType,
        snaplen: i32,
        iface: &str,
    ) -> Result<Recorder, RunError> {
        let fail = |e: io::Error| RunError(format!("{}: {e}", path.display()));
        let file = File::create(path).map_err(fail)?;
        let mut writer = PcapngWriter::new(
            BufWriter::with_capacity(1 << 16, file),
            link,
            u32::try_from(snaplen).unwrap_or(0),
            Some(iface),
            concat!("tfwire ", env!("CARGO_PKG_VERSION"), " live"),
        )
        .map_err(fail)?;
        // The headers reach the disk now: even a capture killed at once is a valid file.
        writer.flush().map_err(fail)?;
        Ok(Recorder {
            path: Some(path.to_path_buf()),
            writer: Some(writer),
            written: 0,
            dirty: false,
            error: None,
        })
    }

    fn packet(&mut self, ts_ns: i64, data: &[u8], orig_len: u32) {
        if let Some(w) = &mut self.writer {
            match w.packet(ts_ns, data, orig_len) {
                Ok(()) => {
                    self.written += 1;
                    self.dirty = true;
                }
                Err(e) => self.fail(e),
            }
        }
    }

    /// Called after every batch, so the file trails the capture by one poll.
    fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Some(w) = &mut self.writer {
            if let Err(e) = w.flush() {
                self.fail(e);
            }
        }
    }

    fn finish(&mut self) {
        self.dirty = true;
        self.flush();
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.into_inner().get_ref().sync_all() {
                self.fail(e);
            }
        }
    }

    fn packets(&self) -> u64 {
        self.written
    }

    fn fail(&mut self, e: io::Error) {
        self.writer = None;
        let path = self
            .path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        self.error = Some(format!(
            "{path}: {e}; stopped writing after {} packets",
            self.written
        ));
    }
}
