//! Codec behaviour: round trips in both framings, equality with apache-avro's own encoder,
//! resolution of another writer version, hostile input.

mod common;

use apache_avro::Schema;
use orderflow_events::schema::shipped;
use orderflow_events::{Codec, DecodeError, Event, EventKind, avro_value, samples};

fn events() -> Vec<Event> {
    vec![
        samples::order_placed().into(),
        samples::order_placed_minimal().into(),
        samples::inventory_changed().into(),
        samples::inventory_received().into(),
        Event::OrderAllocated(samples::order_allocated()),
        Event::OrderBackordered(samples::order_backordered()),
        Event::BackorderAllocated(samples::backorder_allocated()),
    ]
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn single_object_round_trip_preserves_every_field() {
    let codec = Codec::new();
    for e in events() {
        let bytes = block_on(codec.encode(&e)).unwrap();
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        assert_eq!(block_on(codec.decode(&bytes)).unwrap(), e);
    }
}

#[test]
fn direct_encoder_writes_the_same_bytes_as_apache_avro() {
    let codec = Codec::new();
    for e in events() {
        let s = shipped().current(e.kind());
        let theirs = apache_avro::to_avro_datum(&s.schema, avro_value::to_value(&e)).unwrap();
        let ours = codec.encode_single_object(&e).unwrap();
        assert_eq!(&ours[10..], &theirs[..], "{:?}", e.kind());
        // ... and apache-avro reads ours back into the same event.
        let v = apache_avro::from_avro_datum(&s.schema, &mut &ours[10..], None).unwrap();
        assert_eq!(avro_value::from_value(e.kind(), &v).unwrap(), e);
    }
}

/// apache-avro 0.21's `canonical_form` keeps a logical type's primitive as `{"type":"long"}`
/// where the specification's [PRIMITIVES] rule (and Java, fastavro) write `"long"`, so its
/// fingerprint of our schemas differs from everyone else's. We compute the canonical form
/// ourselves; this test pins that the *only* difference is that bug, and that our fingerprint
/// is apache-avro's Rabin of the spec form.
#[test]
fn canonical_form_is_apache_avros_with_the_primitives_rule_applied() {
    for k in EventKind::ALL {
        let s = shipped().current(k);
        let mut theirs = s.schema.canonical_form();
        for p in ["string", "long", "int"] {
            theirs = theirs.replace(&format!("{{\"type\":\"{p}\"}}"), &format!("\"{p}\""));
        }
        assert_eq!(s.canonical_form, theirs, "{}", s.file);
        let fp = Schema::parse_str(&s.canonical_form).unwrap().fingerprint::<apache_avro::rabin::Rabin>().bytes;
        assert_eq!(s.fingerprint.to_le_bytes().to_vec(), fp, "{}", s.file);
    }
}

/// An older writer (v0: no `order_id`, fewer reasons) is resolved to the current reader.
#[test]
fn older_writer_version_is_resolved_into_current_reader() {
    let v0 = Schema::parse_str(common::INVENTORY_V0).unwrap();
    let datum = common::inventory_v0_datum("01935f2a-7c00-7000-8000-000000000009", "SKU-1", 7, 0);
    let reader = &shipped().current(EventKind::InventoryChanged).schema;
    let v = apache_avro::from_avro_datum(&v0, &mut &datum[..], Some(reader)).unwrap();
    let Event::InventoryChanged(e) = avro_value::from_value(EventKind::InventoryChanged, &v).unwrap() else { panic!() };
    assert_eq!(e.order_id, None);
    assert_eq!(e.delta.get(), 7);
}

fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    block_on(Codec::new().decode(bytes))
}

#[test]
fn empty_and_short_headers_are_typed_errors() {
    assert!(matches!(decode(&[]), Err(DecodeError::Empty)));
    assert!(matches!(decode(&[0xC3, 0x01, 1, 2]), Err(DecodeError::TruncatedHeader { need: 10, len: 4, .. })));
    assert!(matches!(decode(&[0x00, 1, 2]), Err(DecodeError::TruncatedHeader { need: 5, len: 3, .. })));
}

#[test]
fn unknown_magic_shows_the_bytes() {
    let e = decode(b"{\"json\":1}").unwrap_err();
    assert!(matches!(&e, DecodeError::UnknownMagic(m) if m == "7b22"), "{e}");
    assert!(e.to_string().contains("7b22"));
    assert!(!e.is_transient());
}

#[test]
fn unknown_fingerprint_is_shown_in_hex() {
    let mut b = Codec::new().encode_single_object(&samples::order_placed().into()).unwrap();
    b[2..10].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]);
    let e = decode(&b).unwrap_err();
    assert!(matches!(&e, DecodeError::UnknownFingerprint(h) if h == "deadbeef00010203"), "{e}");
}

#[test]
fn confluent_frame_without_registry_names_the_id() {
    let e = decode(&[0, 0, 0, 1, 0x2c, 1, 2]).unwrap_err();
    assert!(matches!(e, DecodeError::NoRegistry(300)), "{e}");
}

#[test]
fn every_truncation_of_a_valid_record_is_a_typed_error() {
    let codec = Codec::new();
    for e in events() {
        let b = codec.encode_single_object(&e).unwrap();
        for len in 0..b.len() {
            let err = decode(&b[..len]).expect_err("truncated record decoded");
            assert!(!err.is_transient());
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(DecodeError::Malformed(m)) if m.contains("trailing")));
    }
}

#[test]
fn valid_avro_of_the_other_type_is_rejected() {
    // An InventoryChanged datum under OrderPlaced's fingerprint.
    let codec = Codec::new();
    let inv = codec.encode_single_object(&samples::inventory_changed().into()).unwrap();
    let order = codec.encode_single_object(&samples::order_placed().into()).unwrap();
    let mut swapped = order[..10].to_vec();
    swapped.extend_from_slice(&inv[10..]);
    let e = decode(&swapped).unwrap_err();
    assert!(matches!(e, DecodeError::Malformed(_) | DecodeError::Invalid { .. }), "{e}");
}

#[test]
fn valid_avro_with_invalid_values_names_the_field() {
    let mut e = samples::order_placed();
    e.total_minor = orderflow_events::MinorUnits::parse(1).unwrap();
    let ev: Event = e.into();
    // The encoder refuses it...
    assert!(Codec::new().encode_single_object(&ev).is_err());
    // ... and a foreign writer's bytes are refused on decode.
    let s = shipped().current(EventKind::OrderPlaced);
    let mut b = vec![0xC3, 0x01];
    b.extend_from_slice(&s.fingerprint.to_le_bytes());
    b.extend(apache_avro::to_avro_datum(&s.schema, avro_value::to_value(&ev)).unwrap());
    match decode(&b) {
        Err(DecodeError::Invalid { field, problem }) => {
            assert_eq!(field, "total_minor");
            assert!(problem.contains("sum of the lines"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    // A bad email in an otherwise valid record.
    let mut o = samples::order_placed();
    o.customer.email = orderflow_events::Email::parse("a@b.example").unwrap();
    let good = Codec::new().encode_single_object(&o.into()).unwrap();
    let at = good.windows(11).position(|w| w == b"a@b.example").unwrap();
    let mut bad = good.clone();
    bad[at + 1] = b' ';
    assert!(matches!(decode(&bad), Err(DecodeError::Invalid { field, .. }) if field == "customer.email"));
}

#[test]
fn huge_length_prefixes_fail_without_allocating() {
    let s = shipped().current(EventKind::InventoryChanged);
    // event_id string length 2^62 (zigzag varint), then nothing.
    let mut huge = Vec::new();
    let z: u64 = (1u64 << 62) << 1;
    let mut n = z;
    while n >= 0x80 {
        huge.push((n as u8) | 0x80);
        n >>= 7;
    }
    huge.push(n as u8);
    let mut b = vec![0xC3, 0x01];
    b.extend_from_slice(&s.fingerprint.to_le_bytes());
    b.extend_from_slice(&huge);
    assert!(matches!(decode(&b), Err(DecodeError::Malformed(m)) if m.contains("string length")));
    // apache-avro's own path (other writer versions) is capped by max_allocation_bytes.
    let _ = shipped();
    let r = apache_avro::from_avro_datum(&s.schema, &mut &huge[..], None);
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("allocat") || msg.contains("16777216"), "{msg}");
    assert_eq!(apache_avro::util::max_allocation_bytes(1), orderflow_events::schema::MAX_AVRO_ALLOCATION);
    // An array block count of 2^62 in an order.
    let mut o = Codec::new().encode_single_object(&samples::order_placed().into()).unwrap();
    let lines_at = o.windows(9).position(|w| w == b"SKU-RED-M").unwrap() - 2; // count, len(sku)
    o.truncate(lines_at);
    o.extend_from_slice(&huge);
    assert!(decode(&o).is_err());
}

#[test]
fn decode_for_topic_rejects_events_of_another_topic() {
    let codec = Codec::new();
    let b = codec.encode_single_object(&samples::inventory_changed().into()).unwrap();
    assert!(block_on(codec.decode_for_topic("inventory.v1", &b)).is_ok());
    let e = block_on(codec.decode_for_topic("orders.v1", &b)).unwrap_err();
    assert!(matches!(e, DecodeError::WrongTopic { .. }), "{e}");
    let json = block_on(codec.decode_json(&b)).unwrap();
    assert_eq!(json["type"], "orderflow.inventory.changed.v1");
    assert_eq!(json["delta"], -2);
    assert_eq!(json["reason"], "shipped");
}

#[test]
fn event_accessors() {
    let o: Event = samples::order_placed().into();
    assert_eq!((o.topic(), o.key(), o.ce_type()), ("orders.v1", "ord-2026-000042", "orderflow.order.placed.v1"));
    let i: Event = samples::inventory_received().into();
    assert_eq!((i.topic(), i.key(), i.order_id()), ("inventory.v1", "SKU-SOCKS", None));
    assert_eq!(o.occurred_at().to_rfc3339(), "2026-11-22T13:05:07.123456+00:00");
    // JSON shape round trips.
    let j = serde_json::to_string(&o).unwrap();
    assert_eq!(serde_json::from_str::<Event>(&j).unwrap(), o);
}
