//! HTTP/1 connection decoding of both directions (keep-alive, pipelining,
//! chunked and compressed bodies, gaps, ends), with each request/response
//! pair turned into a REST exchange as in the pipeline.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfwire::http1::{Connection, Event, Limits};
use tfwire::net::{ConnInfo, Dir, RoleSource};
use tfwire::tfserving::Exchange;
use tfwire_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mode = inp.u8();
    let limits = if mode & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_head: 256,
            max_body: 1024,
        }
    };
    let mut conn = Connection::new(limits);
    let info = ConnInfo {
        id: 0,
        client: "10.0.0.1:40000".parse().expect("addr"),
        server: "10.0.0.2:8501".parse().expect("addr"),
        client_text: "10.0.0.1:40000".into(),
        server_text: "10.0.0.2:8501".into(),
        roles: RoleSource::Handshake,
        first_frame: 1,
        first_ts_ns: 0,
    };
    let mut id = 0;
    let mut out = |ev: Event| {
        let Event::Exchange { request, response } = ev;
        id += 1;
        let ex = Exchange::from_rest(id, &info, request.as_deref(), response.as_deref());
        assert!(ex.notes.len() < 100_000);
    };
    let mut frame = 0;
    while !inp.is_empty() {
        let op = inp.u8();
        let len = inp.u16();
        let dir = if op & 1 == 0 {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        frame += 1;
        match (op >> 1) & 3 {
            1 => conn.gap(dir, u64::from(len), &mut out),
            2 => conn.end(dir, &mut out),
            _ => conn.data(
                dir,
                inp.bytes(usize::from(len)),
                frame,
                frame as i64,
                &mut out,
            ),
        }
    }
    conn.close(&mut out);
});
