//! Fuzzes the binary protocol's decoding path (`tcp_listen`): the byte stream split into
//! length-prefixed frames (arriving in pieces of any size), each frame decoded as a protobuf
//! `Request`, translated into the request object the command layer parses, parsed, and a
//! response encoded; the same bytes also decoded as the server frames a client reads.
//!
//! Input: one byte choosing the piece size (1..=64) and the frame limit, then the stream.
//! Oracles: no panic, no frame over the limit, every byte either consumed by a frame or
//! still waiting in the buffer (nothing lost, nothing invented) until a refused prefix ends
//! the stream.

#![no_main]

use bytes::BytesMut;
use komoku::cmd::Command;
use komoku_proto::{Frames, Request, ServerFrame};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn handle(frame: bytes::Bytes) {
    let _ = ServerFrame::decode(frame.clone());
    let Ok(request) = Request::decode(frame) else {
        return;
    };
    let id = request.id;
    let result = komoku::tcp::request_object(request).and_then(|object| {
        let command = Command::parse(&object)?;
        Ok(command.name())
    });
    let response = komoku::tcp::response(
        id,
        result.map(|name| komoku::cmd::Reply::Value(serde_json::json!({ "name": name }))),
    );
    let mut out = BytesMut::new();
    komoku_proto::encode_frame(&response, &mut out);
    let mut check = Frames::new(usize::MAX);
    let again = check
        .split(&mut out)
        .expect("no limit")
        .expect("a whole frame");
    assert_eq!(
        komoku_proto::Response::decode(again).expect("our own encoding decodes"),
        response
    );
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, stream)) = input.split_first() else {
        return;
    };
    let piece = usize::from(mode % 64) + 1;
    let max = if mode & 0x80 == 0 { 4096 } else { 16 };
    let mut frames = Frames::new(max);
    let mut buf = BytesMut::new();
    let mut consumed = 0usize;
    let mut fed = 0usize;
    for chunk in stream.chunks(piece) {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            match frames.split(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= max, "a frame of {} over {max}", frame.len());
                    consumed += komoku_proto::HEADER_BYTES + frame.len();
                    handle(frame);
                }
                Ok(None) => break,
                // The connection is closed here: framing is lost.
                Err(_) => return,
            }
        }
        assert_eq!(consumed + buf.len(), fed, "bytes lost or invented");
    }
});
