//! Entry points for the cargo-fuzz targets under `fuzz/` (feature `fuzzing`). Each one checks
//! properties, not only the absence of panics.

use crate::protocol::nats::codec::{self, ClientOp, Limits};
use bytes::BytesMut;

const LIMITS: Limits = Limits { max_payload: 4096, max_control_line: 256 };

/// Decodes `data` whole and split at every position the first byte selects, and checks:
/// the same ops come out either way; every op re-encodes to bytes that decode to itself.
pub fn nats_decode(data: &[u8]) {
    let whole = decode_stream(&[data]);
    if let Some(&first) = data.first() {
        let split = usize::from(first) % (data.len() + 1);
        let pieces = decode_stream(&[&data[..split], &data[split..]]);
        assert_eq!(whole, pieces, "split at {split} changed the result");
    }
    for op in &whole.0 {
        let mut encoded = BytesMut::new();
        codec::encode_client_op(op, &mut encoded);
        let again = codec::decode(&mut encoded, &LIMITS);
        assert_eq!(again.as_ref().ok().and_then(|o| o.as_ref()), Some(op), "round trip of {op:?}");
        assert!(encoded.is_empty(), "round trip of {op:?} left bytes");
    }
}

/// Feeds `pieces` in order, decoding after each; returns the ops and the first error.
pub fn decode_stream(pieces: &[&[u8]]) -> (Vec<ClientOp>, Option<codec::DecodeError>) {
    let mut buf = BytesMut::new();
    let mut ops = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match codec::decode(&mut buf, &LIMITS) {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => break,
                Err(error) => return (ops, Some(error)),
            }
        }
    }
    (ops, None)
}
