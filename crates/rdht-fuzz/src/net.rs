//! Targets over `rdht-net`'s inputs: the `/rdht/blocks/1` and `/rdht/records/1` wire
//! layouts (specs/swarm.md §3–§4), and the `swarm.key` and bootstrap files (§5).
//!
//! Does not own: the libp2p streams these layouts travel on; a slice stands in for them.

use std::path::Path;

use rdht_core::{BuildKey, BuildRecord, Encoded};
use rdht_net::wire::{
    self, BLOCKS_VERSION_LZ4, Frame, encode_block_request, encode_records_request,
    encode_records_response, read_block_request, read_frame, read_records_request,
    read_records_response,
};
use rdht_net::{BootstrapPeer, SwarmKey, parse_bootstrap};

use crate::now;

/// Reads one value with `read` from the front of `input`, and returns it with the bytes
/// it consumed.
fn consumed<'a, T>(input: &mut &'a [u8], read: impl FnOnce(&mut &'a [u8]) -> T) -> (T, &'a [u8]) {
    let start = *input;
    let value = read(input);
    (value, &start[..start.len() - input.len()])
}

/// A block request, and the frames of a block response, from the same input, as the
/// sender and the receiver read them. Every request and frame read re-encodes to the
/// bytes it came from.
pub fn wire_blocks(data: &[u8]) {
    let mut r = data;
    let (request, bytes) = consumed(&mut r, |r| now(read_block_request(r)));
    if let Ok(request) = request {
        assert!(!request.wants.is_empty() && request.wants.len() <= wire::MAX_WANTS);
        let enc = encode_block_request(&request.wants);
        assert_eq!(enc[1..], bytes[1..]);
        assert_eq!(bytes[0] == BLOCKS_VERSION_LZ4, request.lz4);
    }
    let mut r = data;
    loop {
        let (frame, bytes) = consumed(&mut r, |r| now(read_frame(r)));
        let Ok(frame) = frame else {
            break;
        };
        let mut out = Vec::new();
        now(wire::write_frame(&mut out, &frame)).expect("writing to a Vec");
        assert_eq!(out, bytes);
        assert_eq!(now(read_frame(&mut &out[..])).ok().as_ref(), Some(&frame));
        match frame {
            Frame::Block(Encoded::Raw(b)) => {
                assert!(!b.is_empty() && b.len() <= rdht_core::MAX_BLOCK_LEN);
            }
            Frame::Block(Encoded::Lz4 { data, raw_len }) => {
                assert!(!data.is_empty() && data.len() <= rdht_core::MAX_BLOCK_LEN);
                assert!(raw_len > 0 && raw_len as usize <= rdht_core::MAX_BLOCK_LEN);
            }
            // Nothing follows these.
            Frame::Missing(_) | Frame::End => break,
        }
    }
}

/// The key asked for when the input holds no valid record request.
const KEY: BuildKey = BuildKey::from_bytes([0x5a; 32]);

/// A record request, and a record response (from the same input) whose records are
/// decoded as received, for the key requested.
pub fn wire_records(data: &[u8]) {
    let mut r = data;
    let (request, bytes) = consumed(&mut r, |r| now(read_records_request(r)));
    let key = match request {
        Ok(key) => {
            assert_eq!(encode_records_request(&key), bytes);
            key
        }
        Err(_) => KEY,
    };
    let mut r = data;
    let (response, bytes) = consumed(&mut r, |r| now(read_records_response(r)));
    if let Ok(records) = response {
        assert!(records.len() <= wire::MAX_RECORDS);
        assert_eq!(encode_records_response(&records), bytes);
        for rec in &records {
            let _ = BuildRecord::decode_for(rec, key);
        }
    }
}

/// A file's text through the `swarm.key` and bootstrap list parsers (bytes that are not
/// UTF-8 become U+FFFD first: both files are read as text).
pub fn swarm_files(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz.txt");
    if let Ok(key) = SwarmKey::parse(&text, path) {
        assert_eq!(SwarmKey::parse(&key.to_file_text(), path).ok(), Some(key));
    }
    if let Ok(peers) = parse_bootstrap(&text, path) {
        assert!(peers.len() <= text.lines().count());
        let again: String = peers
            .iter()
            .map(|p| format!("{}\n", p.to_multiaddr()))
            .collect();
        assert_eq!(parse_bootstrap(&again, path).ok().as_ref(), Some(&peers));
        for p in &peers {
            assert_eq!(
                BootstrapPeer::from_multiaddr(p.to_multiaddr()).as_ref(),
                Ok(p)
            );
        }
    }
}
