//! `tfwire live` flags validated into the options a capture runs with, and
//! the BPF filter built from the ports.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use super::{LiveArgs, LiveFormat};
use crate::pipeline::Config;

/// Which user the capture continues as once the interface is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChoice {
    /// When running as root: a `tfwire` user if there is one, else `nobody`.
    Default,
    /// `--user NAME`: this user or an error.
    Named(String),
    /// `--no-drop-privileges`.
    Keep,
}

/// Validated options of `tfwire live`.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub list_interfaces: bool,
    pub interface: Option<String>,
    /// BPF program captured with (built from the ports unless `--filter`).
    pub filter: Option<String>,
    pub config: Config,
    pub format: LiveFormat,
    pub failures_only: bool,
    pub color: bool,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub write: Option<PathBuf>,
    pub idle_timeout: Duration,
    pub user: UserChoice,
    pub model_dirs: Vec<String>,
    pub signature_files: Vec<PathBuf>,
    pub snaplen: i32,
    pub buffer_size: i32,
    pub promisc: bool,
    /// Refresh a status line on stderr (stderr is a terminal).
    pub status_line: bool,
}

/// The BPF filter for the service ports, matching 802.1Q-tagged frames too:
/// `(tcp port A or tcp port B) or (vlan and (tcp port A or tcp port B))`.
/// Linux usually strips the tag before the filter runs, but QinQ inner tags
/// and other systems keep it in the frame, where plain `tcp port` misses it.
pub fn port_filter(ports: &[u16], with_vlan: bool) -> String {
    let mut unique: Vec<u16> = Vec::new();
    for &p in ports {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    let any = unique
        .iter()
        .map(|p| format!("tcp port {p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    if with_vlan {
        format!("({any}) or (vlan and ({any}))")
    } else {
        format!("({any})")
    }
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 && v < 1e9 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("--{name} must be a positive number of seconds"))
    }
}

impl LiveArgs {
    pub fn validate(self) -> Result<LiveOptions, String> {
        let duration = self.duration.map(|d| seconds("duration", d)).transpose()?;
        let idle_timeout = seconds("idle-timeout", self.idle_timeout)?;
        if self.count == Some(0) {
            return Err("--count must be at least 1".into());
        }
        if self.grpc_ports.contains(&0) || self.rest_ports.contains(&0) {
            return Err("port 0 is not a service port".into());
        }
        let snaplen = i32::try_from(self.snaplen)
            .ok()
            .filter(|&s| s > 0)
            .ok_or("--snaplen must be between 1 and 2147483647")?;
        let buffer_size = i32::try_from(self.buffer_size)
            .ok()
            .filter(|&s| s > 0)
            .ok_or("--buffer-size must be between 1 and 2147483647")?;
        let user = match (self.user, self.no_drop_privileges) {
            (_, true) => UserChoice::Keep,
            (Some(name), false) if name.is_empty() => return Err("--user needs a user name".into()),
            (Some(name), false) => UserChoice::Named(name),
            (None, false) => UserChoice::Default,
        };
        let stdout_tty = std::io::stdout().is_terminal();
        let format = self.format.unwrap_or(if stdout_tty {
            LiveFormat::Table
        } else {
            LiveFormat::Jsonl
        });
        let config = Config {
            grpc_ports: self.grpc_ports,
            rest_ports: self.rest_ports,
            ..Config::default()
        };
        Ok(LiveOptions {
            list_interfaces: self.list_interfaces,
            interface: self.interface,
            filter: self.filter,
            config,
            format,
            failures_only: self.failures_only,
            color: stdout_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            duration,
            count: self.count,
            write: self.write,
            idle_timeout,
            user,
            model_dirs: self.model_dirs,
            signature_files: self.signature_files,
            snaplen,
            buffer_size,
            promisc: self.promisc,
            status_line: !self.no_status && std::io::stderr().is_terminal(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: LiveArgs,
    }

    fn parse(args: &[&str]) -> Result<LiveOptions, String> {
        let mut all = vec!["live"];
        all.extend_from_slice(args);
        Wrap::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .args
            .validate()
    }

    #[test]
    fn filter_covers_every_port_with_and_without_vlan_tags() {
        assert_eq!(
            port_filter(&[8500, 8501, 8500], true),
            "(tcp port 8500 or tcp port 8501) or (vlan and (tcp port 8500 or tcp port 8501))"
        );
        assert_eq!(port_filter(&[9000], false), "(tcp port 9000)");
    }

    #[test]
    fn defaults_and_repeatable_ports() {
        let o = parse(&["-i", "lo"]).expect("valid");
        assert_eq!(o.config.grpc_ports, vec![8500]);
        assert_eq!(o.config.rest_ports, vec![8501]);
        assert_eq!(o.user, UserChoice::Default);
        assert_eq!(o.idle_timeout, Duration::from_secs(300));
        let o = parse(&["-p", "9000", "-p", "9001", "--rest-port", "9002"]).expect("valid");
        assert_eq!(o.config.grpc_ports, vec![9000, 9001]);
        assert_eq!(o.config.rest_ports, vec![9002]);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--duration", "0"]).is_err());
        assert!(parse(&["--duration", "NaN"]).is_err());
        assert!(parse(&["--idle-timeout", "-1"]).is_err());
        assert!(parse(&["--count", "0"]).is_err());
        assert!(parse(&["-p", "0"]).is_err());
        assert!(parse(&["--snaplen", "0"]).is_err());
        assert!(parse(&["--snaplen", "4294967295"]).is_err());
        assert!(parse(&["--user", "x", "--no-drop-privileges"]).is_err());
    }

    #[test]
    fn user_choice() {
        let o = parse(&["--user", "daemon"]).expect("valid");
        assert_eq!(o.user, UserChoice::Named("daemon".into()));
        let o = parse(&["--no-drop-privileges"]).expect("valid");
        assert_eq!(o.user, UserChoice::Keep);
    }
}
