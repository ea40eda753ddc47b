//! Property tests: no input makes the decoder panic; every failure is a typed error.

use orderflow_events::{Codec, Event, samples};
use proptest::prelude::*;

fn valid_encodings() -> Vec<Vec<u8>> {
    let codec = Codec::new();
    let events: Vec<Event> = vec![
        samples::order_placed().into(),
        samples::inventory_changed().into(),
        samples::inventory_received().into(),
        Event::OrderAllocated(samples::order_allocated()),
        Event::OrderBackordered(samples::order_backordered()),
    ];
    events.iter().map(|e| codec.encode_single_object(e).unwrap()).collect()
}

fn decode(bytes: &[u8]) -> Result<Event, orderflow_events::DecodeError> {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(Codec::new().decode(bytes))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(which in 0usize..3, tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut b = valid_encodings()[which][..10].to_vec();
        b.extend(tail);
        let _ = decode(&b);
    }

    #[test]
    fn mutated_valid_encodings_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut b = valid_encodings()[which].clone();
        for (pos, byte, op) in edits {
            let pos = pos % (b.len() + 1);
            match op {
                0 if pos < b.len() => b[pos] = byte,
                1 => b.insert(pos, byte),
                _ if pos < b.len() => { b.remove(pos); }
                _ => {}
            }
        }
        match decode(&b) {
            // A mutation may still be a valid event (Avro allows e.g. non-minimal varints);
            // it must then be a valid event again after a round trip.
            Ok(e) => {
                let again = Codec::new().encode_single_object(&e).unwrap();
                prop_assert_eq!(decode(&again).unwrap(), e);
            }
            Err(e) => prop_assert!(!e.is_transient()),
        }
    }
}
