//! `tfwire live` on loopback: a real gRPC client and server (the `h2` crate
//! on tokio) talk on random 127.0.0.1 ports while `tfwire live -i lo`
//! captures them. Capturing needs root (or CAP_NET_RAW): without it every
//! test here says it was skipped, on stderr, and returns.
#![cfg(all(feature = "live", unix))]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use serde_json::Value;
use tfwire::tfserving::pb::tensorflow::serving::{ModelSpec, PredictRequest, PredictResponse};
use tfwire::tfserving::pb::tensorflow::{tensor_shape_proto, TensorProto, TensorShapeProto};

use crate::support::{fixture, tfwire_bin};

const DT_FLOAT: i32 = 1;
const DT_DOUBLE: i32 = 2;
const DTYPE_ERROR: &str = "Expects arg[0] to be float but double is provided";
/// Requests for this model are never answered.
const HANG_MODEL: &str = "hang";

/// True when this process may capture; otherwise says on stderr why the test
/// is skipped (written to the real stderr, past the test harness's capture).
fn can_capture(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED live::{test}: capturing on lo needs root (CI runs these as root)"
    );
    false
}

/// A listener on a free loopback port.
fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = l.local_addr().expect("local addr").port();
    (l, port)
}

/// A free loopback port nothing listens on (keeps unrelated loopback traffic
/// out of the default REST port's filter).
fn unused_port() -> u16 {
    listener().1
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tfwire-live-{}-{name}", std::process::id()))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------- the server

/// A TF-Serving-like gRPC server for one connection: float32 requests get a
/// PredictResponse, float64 requests the real INVALID_ARGUMENT, and requests
/// for `HANG_MODEL` no answer at all.
fn grpc_server(listener: TcpListener) -> JoinHandle<()> {
    thread::spawn(move || {
        runtime().block_on(async move {
            listener.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let (sock, _) = listener.accept().await.expect("accept");
            let mut conn = h2::server::handshake(sock).await.expect("h2 handshake");
            while let Some(r) = conn.accept().await {
                let Ok((req, respond)) = r else { break };
                tokio::spawn(answer(req, respond));
            }
        })
    })
}

async fn answer(req: http::Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
    let mut body = req.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("request data");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let request =
        PredictRequest::decode(data.get(5..).unwrap_or_default()).expect("PredictRequest");
    let model = request.model_spec.map(|m| m.name).unwrap_or_default();
    if model == HANG_MODEL {
        // Hold the stream open without a word until the client goes away.
        let _keep = respond;
        std::future::pending::<()>().await;
        return;
    }
    let head = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    if request.inputs.values().any(|t| t.dtype == DT_DOUBLE) {
        // Trailers-Only, as a gRPC server answers a call that failed at once.
        let head = head
            .header("grpc-status", "3")
            .header("grpc-message", DTYPE_ERROR)
            .body(())
            .expect("response");
        respond.send_response(head, true).expect("send response");
        return;
    }
    let mut stream = respond
        .send_response(head.body(()).expect("response"), false)
        .expect("send response");
    let reply = PredictResponse {
        outputs: [("scores".to_string(), tensor(DT_FLOAT, &[1, 2], 4))].into(),
        ..Default::default()
    };
    stream
        .send_data(grpc_frame(&reply.encode_to_vec()), false)
        .expect("send data");
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    stream.send_trailers(trailers).expect("send trailers");
}

// ---------------------------------------------------------------- the client

fn tensor(dtype: i32, shape: &[i64], elem_size: usize) -> TensorProto {
    let n: i64 = shape.iter().product();
    TensorProto {
        dtype,
        tensor_shape: Some(TensorShapeProto {
            dim: shape
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        tensor_content: vec![0u8; n as usize * elem_size].into(),
        ..Default::default()
    }
}

fn grpc_frame(message: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(5 + message.len());
    f.push(0);
    f.extend_from_slice(&(message.len() as u32).to_be_bytes());
    f.extend_from_slice(message);
    f.into()
}

/// One Predict call to be made: the input "features" [1,10] in `dtype`.
struct Call {
    request_id: &'static str,
    model: &'static str,
    dtype: i32,
}

/// What the client saw.
#[derive(Debug)]
struct Answer {
    grpc_status: Option<String>,
    at: Instant,
}

/// Makes the calls one after the other on one connection. `linger` keeps the
/// connection open (idle) that long after the calls before closing it; calls
/// without an answer are abandoned after `patience`.
fn grpc_client(port: u16, calls: &[Call], patience: Duration, linger: Duration) -> Vec<Answer> {
    runtime().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut answers = Vec::new();
        for call in calls {
            let request = PredictRequest {
                model_spec: Some(ModelSpec {
                    name: call.model.into(),
                    signature_name: "serving_default".into(),
                    ..Default::default()
                }),
                inputs: [(
                    "features".to_string(),
                    tensor(
                        call.dtype,
                        &[1, 10],
                        if call.dtype == DT_DOUBLE { 8 } else { 4 },
                    ),
                )]
                .into(),
                ..Default::default()
            };
            let head = http::Request::builder()
                .method("POST")
                .uri(format!(
                    "http://127.0.0.1:{port}/tensorflow.serving.PredictionService/Predict"
                ))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("x-request-id", call.request_id)
                .body(())
                .expect("request");
            client = client.ready().await.expect("ready");
            let (response, mut send) = client.send_request(head, false).expect("send request");
            send.send_data(grpc_frame(&request.encode_to_vec()), true)
                .expect("send data");
            let read = async {
                let response = response.await.expect("response");
                let status = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let mut body = response.into_body();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.expect("response data");
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                let trailers = body.trailers().await.expect("trailers");
                status.or_else(|| {
                    trailers
                        .and_then(|t| t.get("grpc-status").cloned())
                        .and_then(|v| v.to_str().ok().map(str::to_string))
                })
            };
            let grpc_status = tokio::time::timeout(patience, read).await.ok().flatten();
            answers.push(Answer {
                grpc_status,
                at: Instant::now(),
            });
        }
        tokio::time::sleep(linger).await;
        drop(client);
        // h2 closes the connection once the last handle is gone.
        let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
        answers
    })
}

// ---------------------------------------------------------------- tfwire live

/// A running `tfwire live`, its output read as it comes.
struct Live {
    child: Child,
    stdout: Receiver<(Instant, String)>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// What a finished `tfwire live` printed.
struct Finished {
    status: ExitStatus,
    /// Every stdout line, parsed, with the moment it was read.
    lines: Vec<(Instant, Value)>,
    stderr: String,
}

impl Finished {
    fn exchanges(&self) -> Vec<&Value> {
        self.lines
            .iter()
            .map(|(_, v)| v)
            .filter(|v| v["type"] == "exchange")
            .collect()
    }

    fn by_request_id(&self, id: &str) -> (Instant, &Value) {
        self.lines
            .iter()
            .find(|(_, v)| v["request_id"] == id)
            .map(|(t, v)| (*t, v))
            .unwrap_or_else(|| panic!("{id} not printed; stderr:\n{}", self.stderr))
    }

    fn summary(&self) -> &Value {
        match self.lines.last() {
            Some((_, v)) if v["type"] == "summary" => v,
            _ => panic!("no closing summary line; stderr:\n{}", self.stderr),
        }
    }
}

impl Live {
    /// Starts `tfwire live ARGS --format jsonl` and waits until it listens.
    fn start(args: &[&str]) -> Live {
        let mut child = Command::new(tfwire_bin())
            .arg("live")
            .args(args)
            .args(["--format", "jsonl", "--no-status"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tfwire live");
        let (out_tx, out_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if out_tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let (err_tx, err_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let keep = Arc::clone(&stderr_lines);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                keep.lock().expect("stderr lines").push(line.clone());
                let _ = err_tx.send(line);
            }
        });
        let mut live = Live {
            child,
            stdout: out_rx,
            stderr: stderr_lines,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match err_rx.recv_timeout(left) {
                Ok(l) if l.contains("listening on") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = live.child.kill();
                    panic!("tfwire live did not start:\n{}", live.stderr_text());
                }
            }
        }
        live
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits (at most `limit`) for the exit; returns what it printed and when
    /// it exited.
    fn wait(mut self, limit: Duration) -> (Finished, Instant) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "tfwire live still running after {limit:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        let exited = Instant::now();
        let lines = self
            .stdout
            .iter()
            .map(|(t, l)| {
                let v = serde_json::from_str(&l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"));
                (t, v)
            })
            .collect();
        // The stderr reader ends with the process; give it a moment.
        thread::sleep(Duration::from_millis(20));
        let finished = Finished {
            status,
            lines,
            stderr: self.stderr_text(),
        };
        (finished, exited)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Runs `tfwire analyze --format jsonl` and returns its exchanges.
fn analyze(capture: &PathBuf, extra: &[&str]) -> Vec<Value> {
    let out = Command::new(tfwire_bin())
        .args(["analyze", "--format", "jsonl"])
        .args(extra)
        .arg(capture)
        .output()
        .expect("run tfwire analyze");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "analyze failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .filter(|v| v["type"] == "exchange")
        .collect()
}

// ---------------------------------------------------------------- the tests

/// The "done when": a float64 request to a float32 model, seen live
/// with its diagnosis within a second of the response; the `--write` copy
/// gives the same exchanges to `tfwire analyze`.
#[test]
fn float64_request_to_float32_model_is_diagnosed_live_and_the_written_capture_agrees() {
    if !can_capture(
        "float64_request_to_float32_model_is_diagnosed_live_and_the_written_capture_agrees",
    ) {
        return;
    }
    let (l, port) = listener();
    let rest = unused_port();
    let server = grpc_server(l);
    let file = temp_path("dtype.pcapng");
    let signatures = fixture("models/fraud.signatures.json");
    let (port_s, rest_s) = (port.to_string(), rest.to_string());
    let common = [
        "-p",
        port_s.as_str(),
        "--rest-port",
        rest_s.as_str(),
        "--signatures",
        signatures.to_str().expect("utf-8 path"),
    ];
    let mut args = vec!["-i", "lo", "--duration", "4"];
    args.extend_from_slice(&common);
    let file_s = file.to_str().expect("utf-8 path").to_string();
    args.extend_from_slice(&["--write", file_s.as_str()]);
    let live = Live::start(&args);

    let answers = grpc_client(
        port,
        &[
            Call {
                request_id: "live-ok",
                model: "fraud",
                dtype: DT_FLOAT,
            },
            Call {
                request_id: "live-f64",
                model: "fraud",
                dtype: DT_DOUBLE,
            },
        ],
        Duration::from_secs(5),
        Duration::ZERO,
    );
    server.join().expect("server thread");
    assert_eq!(answers[0].grpc_status.as_deref(), Some("0"));
    assert_eq!(answers[1].grpc_status.as_deref(), Some("3"));

    let (run, _) = live.wait(Duration::from_secs(15));
    assert_eq!(
        run.status.code(),
        Some(1),
        "a failure seen → exit 1; {}",
        run.stderr
    );

    let (_, ok) = run.by_request_id("live-ok");
    assert_eq!(ok["status"]["ok"], true);
    assert_eq!(ok["model"], "fraud");
    assert_eq!(ok["inputs"][0]["dtype"], "DT_FLOAT");
    assert_eq!(ok["diagnosis"], Value::Null);

    let (printed_at, bad) = run.by_request_id("live-f64");
    assert_eq!(bad["transport"], "grpc");
    assert_eq!(bad["method"], "Predict");
    assert_eq!(bad["server"], format!("127.0.0.1:{port}"));
    assert_eq!(bad["model"], "fraud");
    assert_eq!(bad["signature"], "serving_default");
    assert_eq!(bad["inputs"][0]["name"], "features");
    assert_eq!(bad["inputs"][0]["dtype"], "DT_DOUBLE");
    assert_eq!(bad["inputs"][0]["shape"], serde_json::json!([1, 10]));
    assert_eq!(bad["status"]["ok"], false);
    assert_eq!(bad["status"]["grpc_status"], "INVALID_ARGUMENT");
    assert_eq!(bad["status"]["message"], DTYPE_ERROR);
    assert_eq!(bad["complete"], true);
    let d = &bad["diagnosis"];
    assert_eq!(d["category"], "dtype_mismatch", "{bad}");
    assert_eq!(d["input"], "features");
    assert_eq!(d["sent_dtype"], "DT_DOUBLE");
    assert_eq!(d["expected_dtype"], "DT_FLOAT");
    assert_eq!(
        d["confidence"], "certain",
        "server message + signatures agree"
    );
    let lag = printed_at.saturating_duration_since(answers[1].at);
    assert!(
        lag < Duration::from_secs(1),
        "printed {lag:?} after the client got the response"
    );

    let summary = run.summary();
    assert_eq!(summary["exchanges"], 2);
    assert_eq!(summary["failures"], 1);
    assert_eq!(summary["root_causes"][0]["category"], "dtype_mismatch");
    let live_stats = &summary["live"];
    assert_eq!(live_stats["stopped_by"], "duration");
    assert_eq!(live_stats["interface"], "lo");
    assert!(
        live_stats["received"].as_u64().is_some_and(|n| n > 0),
        "{live_stats}"
    );
    assert_eq!(live_stats["dropped"], 0);
    assert!(live_stats["if_dropped"].is_u64());
    let packets = summary["capture"]["packets"].as_u64().expect("packets");
    assert_eq!(live_stats["written_packets"], packets);

    // The postmortem: the written capture, analysed offline, says the same.
    let mut extra = vec![
        "--grpc-port",
        port_s.as_str(),
        "--rest-port",
        rest_s.as_str(),
    ];
    extra.extend_from_slice(&common[4..]);
    let offline = analyze(&file, &extra);
    let online: Vec<Value> = run.exchanges().into_iter().cloned().collect();
    assert_eq!(
        offline, online,
        "analyze on the --write file (left) vs what live printed (right)"
    );
    let _ = std::fs::remove_file(&file);
}

/// SIGINT while nothing moves on the link: the loop must not sit in a
/// blocking read (libpcap's timeout does not fire on an idle Linux capture).
#[test]
fn sigint_on_an_idle_link_exits_within_a_second_with_the_summary() {
    if !can_capture("sigint_on_an_idle_link_exits_within_a_second_with_the_summary") {
        return;
    }
    let (port, rest) = (unused_port().to_string(), unused_port().to_string());
    let live = Live::start(&["-i", "lo", "-p", &port, "--rest-port", &rest]);
    thread::sleep(Duration::from_millis(1500));
    let pid = live.pid();
    let sent = Instant::now();
    signal(pid, "INT");
    let (run, exited) = live.wait(Duration::from_secs(5));
    let took = exited.duration_since(sent);
    assert!(
        took < Duration::from_secs(1),
        "exited {took:?} after SIGINT"
    );
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    let summary = run.summary();
    assert_eq!(summary["exchanges"], 0);
    assert_eq!(summary["live"]["stopped_by"], "signal");
    for k in ["received", "dropped", "if_dropped"] {
        assert!(
            summary["live"][k].is_u64(),
            "libpcap's {k} count: {summary}"
        );
    }
    assert!(
        run.stderr.contains("0 dropped"),
        "counts on stderr too: {}",
        run.stderr
    );
}

/// A request whose response never comes is reported when its idle connection
/// expires, while the connection is still open.
#[test]
fn unanswered_request_is_reported_when_its_connection_expires() {
    if !can_capture("unanswered_request_is_reported_when_its_connection_expires") {
        return;
    }
    let (l, port) = listener();
    let rest = unused_port();
    let server = grpc_server(l);
    let (port_s, rest_s) = (port.to_string(), rest.to_string());
    let live = Live::start(&[
        "-i",
        "lo",
        "-p",
        &port_s,
        "--rest-port",
        &rest_s,
        "--idle-timeout",
        "1",
        "--duration",
        "6",
    ]);
    let answers = grpc_client(
        port,
        &[Call {
            request_id: "live-hang",
            model: HANG_MODEL,
            dtype: DT_FLOAT,
        }],
        Duration::from_millis(3500),
        Duration::ZERO,
    );
    let closed_at = Instant::now();
    server.join().expect("server thread");
    assert_eq!(answers[0].grpc_status, None, "the server never answers");

    let (run, _) = live.wait(Duration::from_secs(15));
    let (printed_at, ex) = run.by_request_id("live-hang");
    assert!(
        printed_at < closed_at,
        "reported on expiry, before the client gave up and closed"
    );
    assert_eq!(ex["model"], HANG_MODEL);
    assert_eq!(ex["status"]["ok"], false);
    assert_eq!(ex["complete"], false);
    assert_eq!(ex["latency_ms"], Value::Null);
    let notes = ex["notes"].to_string();
    assert!(notes.contains("idle-timeout"), "{notes}");
    assert_eq!(run.summary()["live"]["expired_connections"], 1);
    assert_eq!(run.exchanges().len(), 1, "reported once");
}

/// `-i any` delivers Linux cooked (SLL) frames; `--count` stops the capture.
#[test]
fn any_interface_and_count() {
    if !can_capture("any_interface_and_count") {
        return;
    }
    let (l, port) = listener();
    let rest = unused_port();
    let server = grpc_server(l);
    let (port_s, rest_s) = (port.to_string(), rest.to_string());
    let live = Live::start(&[
        "-i",
        "any",
        "-p",
        &port_s,
        "--rest-port",
        &rest_s,
        "--count",
        "2",
        "--duration",
        "20",
    ]);
    let calls: Vec<Call> = ["any-1", "any-2", "any-3"]
        .into_iter()
        .map(|id| Call {
            request_id: id,
            model: "fraud",
            dtype: DT_DOUBLE,
        })
        .collect();
    grpc_client(port, &calls, Duration::from_secs(5), Duration::ZERO);
    server.join().expect("server thread");
    let (run, _) = live.wait(Duration::from_secs(10));
    let ex = run.exchanges();
    assert_eq!(ex.len(), 2, "--count 2");
    assert_eq!(ex[0]["request_id"], "any-1");
    assert_eq!(ex[1]["request_id"], "any-2");
    for e in &ex {
        assert_eq!(e["diagnosis"]["category"], "dtype_mismatch", "{e}");
    }
    let summary = run.summary();
    assert_eq!(summary["live"]["stopped_by"], "count");
    let link = summary["live"]["link_type"].as_str().unwrap_or_default();
    assert!(link.starts_with("LINUX_SLL"), "{link}");
}

// ---------------------------------------------------------------- REST

/// A TF-Serving-like REST server for one connection: every request gets the
/// 400 TF Serving sends for a JSON string where a float belongs.
fn rest_server(listener: TcpListener) -> JoinHandle<()> {
    thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("accept");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                match sock.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match sock.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..end + 4 + len);
            let body = "{ \"error\": \"Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \\\"0.5\\\" Type: String is not of expected type: float\" }";
            let response = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(response.as_bytes()).expect("write response");
        }
    })
}

/// The REST half: a REST client and server on loopback.
#[test]
fn rest_request_with_a_string_for_a_float_is_diagnosed_live() {
    if !can_capture("rest_request_with_a_string_for_a_float_is_diagnosed_live") {
        return;
    }
    let (l, rest) = listener();
    let grpc = unused_port();
    let server = rest_server(l);
    let signatures = fixture("models/fraud.signatures.json");
    let (grpc_s, rest_s) = (grpc.to_string(), rest.to_string());
    let live = Live::start(&[
        "-i",
        "lo",
        "-p",
        &grpc_s,
        "--rest-port",
        &rest_s,
        "--signatures",
        signatures.to_str().expect("utf-8 path"),
        "--duration",
        "3",
    ]);
    let body = format!("{{\"instances\": [[{}]]}}", ["\"0.5\""; 10].join(", "));
    let mut sock = TcpStream::connect(("127.0.0.1", rest)).expect("connect");
    write!(
        sock,
        "POST /v1/models/fraud:predict HTTP/1.1\r\nHost: 127.0.0.1:{rest}\r\nX-Request-Id: live-rest\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&response).contains("\" }") {
        match sock.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
        }
    }
    assert!(response.starts_with(b"HTTP/1.1 400"));
    drop(sock);
    server.join().expect("server thread");

    let (run, _) = live.wait(Duration::from_secs(10));
    let ex = run.exchanges();
    assert_eq!(ex.len(), 1, "{}", run.stderr);
    let ex = ex[0];
    assert_eq!(ex["transport"], "rest");
    assert_eq!(ex["method"], "Predict");
    assert_eq!(ex["model"], "fraud");
    assert_eq!(ex["status"]["http_status"], 400);
    assert_eq!(ex["status"]["ok"], false);
    assert_eq!(ex["diagnosis"]["category"], "dtype_mismatch", "{ex}");
    assert_eq!(ex["diagnosis"]["expected_dtype"], "DT_FLOAT");
}
