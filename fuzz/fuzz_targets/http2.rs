//! HTTP/2 connection decoding of both directions, from the start (preface)
//! or mid-connection, with gaps; events go through the gRPC call table and
//! finished calls become exchanges, as in the pipeline.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfwire::grpc::{self, CallTable};
use tfwire::http2::{Connection, Event, Limits};
use tfwire::net::{ConnInfo, Dir, RoleSource};
use tfwire::tfserving::Exchange;
use tfwire_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mode = inp.u8();
    let limits = if mode & 2 == 0 {
        Limits::default()
    } else {
        Limits {
            max_buffered_frame: 512,
        }
    };
    let mut conn = if mode & 1 == 0 {
        Connection::new(limits)
    } else {
        Connection::new_mid_connection(limits)
    };
    let mut glimits = grpc::Limits::default();
    if mode & 4 != 0 {
        glimits.messages.max_message = 1024;
        glimits.messages.max_messages = 2;
        glimits.max_open_calls = 4;
    }
    let mut calls = CallTable::new(0, glimits);
    let info = ConnInfo {
        id: 0,
        client: "10.0.0.1:40000".parse().expect("addr"),
        server: "10.0.0.2:8500".parse().expect("addr"),
        client_text: "10.0.0.1:40000".into(),
        server_text: "10.0.0.2:8500".into(),
        roles: RoleSource::Handshake,
        first_frame: 1,
        first_ts_ns: 0,
    };
    let mut id = 0;
    let mut done = |call| {
        id += 1;
        let ex = Exchange::from_grpc(id, &info, call);
        assert!(ex.notes.len() < 10_000);
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
        let mut sink = |ev: Event<'_>| calls.event(ev, &mut done);
        if op & 2 != 0 {
            conn.gap(dir, u64::from(len), &mut sink);
        } else {
            let bytes = inp.bytes(usize::from(len));
            conn.data(dir, bytes, frame, frame as i64, &mut sink);
        }
    }
    calls.close(&mut done);
    let _ = conn.stats();
});
