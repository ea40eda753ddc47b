//! CloudEvents Kafka protocol binding, binary mode: the event's attributes travel as Kafka
//! headers (`ce_specversion`, `ce_id`, `ce_type`, `ce_source`, `ce_time`, `content-type`), plus
//! the W3C `traceparent`. Built and parsed only here. Plain `(name, bytes)` pairs keep this
//! crate free of any Kafka client; the runtime converts them to its client's header type.

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::error::HeaderError;
use crate::event::Event;

pub const SPECVERSION: &str = "ce_specversion";
pub const ID: &str = "ce_id";
pub const TYPE: &str = "ce_type";
pub const SOURCE: &str = "ce_source";
pub const TIME: &str = "ce_time";
pub const CONTENT_TYPE: &str = "content-type";
pub const TRACEPARENT: &str = "traceparent";
/// The only CloudEvents version written and accepted.
pub const SPECVERSION_1_0: &str = "1.0";
/// Content type of every value orderflow writes (both framings).
pub const AVRO_CONTENT_TYPE: &str = "application/avro";
const MAX_HEADER_LEN: usize = 512;

/// A W3C trace context `traceparent` (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(String);

impl TraceParent {
    pub fn parse(s: &str) -> Result<Self, HeaderError> {
        let bad = |p: &str| HeaderError::Invalid { header: TRACEPARENT, problem: format!("{p} in {:?}", truncate(s)) };
        let parts: Vec<&str> = s.split('-').collect();
        let [version, trace_id, parent_id, flags] = parts[..] else {
            return Err(bad("expected 4 dash-separated parts"));
        };
        let hex =
            |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex(version, 2) || version == "ff" {
            return Err(bad("bad version"));
        }
        if version == "00" && s.len() != 55 {
            return Err(bad("version 00 must be 55 characters"));
        }
        if !hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
            return Err(bad("bad trace id"));
        }
        if !hex(parent_id, 16) || parent_id.bytes().all(|b| b == b'0') {
            return Err(bad("bad parent id"));
        }
        if !hex(flags, 2) {
            return Err(bad("bad flags"));
        }
        Ok(TraceParent(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The CloudEvents attributes of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeHeaders {
    /// `ce_id`: the event id.
    pub id: Uuid,
    /// `ce_type`, e.g. `orderflow.order.placed.v1`. Kept as text: a consumer may meet a type
    /// added after it was built and must be able to say which.
    pub ce_type: String,
    /// `ce_source`: URI-reference of the producer, e.g. `/orderflow/ingress`.
    pub source: String,
    /// `ce_time`: when the fact happened (the event's occurred-at).
    pub time: DateTime<Utc>,
    pub traceparent: Option<TraceParent>,
}

impl CeHeaders {
    /// Headers for `event`, produced by `source`.
    pub fn for_event(event: &Event, source: &str, traceparent: Option<TraceParent>) -> Self {
        CeHeaders {
            id: event.event_id(),
            ce_type: event.ce_type().to_owned(),
            source: source.to_owned(),
            time: event.occurred_at(),
            traceparent,
        }
    }

    /// Kafka header pairs, in a fixed order.
    pub fn to_pairs(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut v = vec![
            (SPECVERSION, SPECVERSION_1_0.as_bytes().to_vec()),
            (ID, self.id.to_string().into_bytes()),
            (TYPE, self.ce_type.clone().into_bytes()),
            (SOURCE, self.source.clone().into_bytes()),
            (TIME, self.time.to_rfc3339_opts(SecondsFormat::AutoSi, true).into_bytes()),
            (CONTENT_TYPE, AVRO_CONTENT_TYPE.as_bytes().to_vec()),
        ];
        if let Some(tp) = &self.traceparent {
            v.push((TRACEPARENT, tp.as_str().as_bytes().to_vec()));
        }
        v
    }

    /// Parses the headers of a record. Unknown headers are ignored; for a repeated header the
    /// first occurrence counts. Errors name the missing or bad header.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Self, HeaderError> {
        const NAMES: [&str; 7] = [SPECVERSION, ID, TYPE, SOURCE, TIME, CONTENT_TYPE, TRACEPARENT];
        let mut found: [Option<&'a [u8]>; 7] = [None; 7];
        for (name, value) in pairs {
            if let Some(i) = NAMES.iter().position(|n| *n == name)
                && found[i].is_none()
            {
                found[i] = Some(value);
            }
        }
        let text = |i: usize| -> Result<Option<&'a str>, HeaderError> {
            let Some(v) = found[i] else { return Ok(None) };
            if v.len() > MAX_HEADER_LEN {
                return Err(HeaderError::Invalid {
                    header: NAMES[i],
                    problem: format!("longer than {MAX_HEADER_LEN} bytes"),
                });
            }
            std::str::from_utf8(v)
                .map(Some)
                .map_err(|_| HeaderError::Invalid { header: NAMES[i], problem: "not UTF-8".into() })
        };
        let required = |i: usize| text(i)?.ok_or(HeaderError::Missing(NAMES[i]));
        let invalid = |header: &'static str, problem: String| HeaderError::Invalid { header, problem };

        let spec = required(0)?;
        if spec != SPECVERSION_1_0 {
            return Err(invalid(SPECVERSION, format!("unsupported version {:?}, expected 1.0", truncate(spec))));
        }
        let id = required(1)?;
        let id = Uuid::try_parse(id).map_err(|_| invalid(ID, format!("{:?} is not a UUID", truncate(id))))?;
        let ce_type = required(2)?;
        if ce_type.is_empty() {
            return Err(invalid(TYPE, "empty".into()));
        }
        let source = required(3)?;
        if source.is_empty() || source.chars().any(char::is_whitespace) {
            return Err(invalid(SOURCE, format!("{:?} is not a URI-reference", truncate(source))));
        }
        let time = required(4)?;
        let time = DateTime::parse_from_rfc3339(time)
            .map_err(|_| invalid(TIME, format!("{:?} is not RFC 3339", truncate(time))))?
            .with_timezone(&Utc);
        let ct = required(5)?;
        if ct.split(';').next().map(str::trim) != Some(AVRO_CONTENT_TYPE) {
            return Err(invalid(CONTENT_TYPE, format!("{:?}, expected {AVRO_CONTENT_TYPE}", truncate(ct))));
        }
        let traceparent = text(6)?.map(TraceParent::parse).transpose()?;
        Ok(CeHeaders { id, ce_type: ce_type.to_owned(), source: source.to_owned(), time, traceparent })
    }

    /// Checks that the headers describe `event` (same id and type).
    pub fn check_matches(&self, event: &Event) -> Result<(), HeaderError> {
        if self.id != event.event_id() {
            return Err(HeaderError::Invalid {
                header: ID,
                problem: format!("{} but the value's event_id is {}", self.id, event.event_id()),
            });
        }
        if self.ce_type != event.ce_type() {
            return Err(HeaderError::Invalid {
                header: TYPE,
                problem: format!("{} but the value is a {}", self.ce_type, event.ce_type()),
            });
        }
        Ok(())
    }
}

/// What a consumer checks of a record's CloudEvents headers against the value it decoded:
/// `ce_specversion` is `1.0`, `ce_type` names the decoded event's type, `ce_id` is its event id.
/// Each is checked where present, so a record with no `ce_*` headers (an older producer, a tool
/// that writes bare Avro) is read by its value alone, as before; a record whose headers say one
/// thing while its bytes are another (a producer bug) is refused, naming the header. For a
/// repeated header the first occurrence counts.
pub fn check_on_read<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    event: &Event,
) -> Result<(), HeaderError> {
    const CHECKED: [&str; 3] = [SPECVERSION, TYPE, ID];
    let mut found: [Option<&'a [u8]>; 3] = [None; 3];
    for (name, value) in pairs {
        if let Some(i) = CHECKED.iter().position(|n| *n == name)
            && found[i].is_none()
        {
            found[i] = Some(value);
        }
    }
    let shown = |v: &[u8]| truncate(&String::from_utf8_lossy(v));
    let invalid = |header: &'static str, problem: String| HeaderError::Invalid { header, problem };
    if let Some(v) = found[0]
        && v != SPECVERSION_1_0.as_bytes()
    {
        return Err(invalid(SPECVERSION, format!("unsupported version {:?}, expected 1.0", shown(v))));
    }
    if let Some(v) = found[1]
        && v != event.ce_type().as_bytes()
    {
        return Err(invalid(TYPE, format!("{:?} but the value is a {}", shown(v), event.ce_type())));
    }
    if let Some(v) = found[2] {
        let id = std::str::from_utf8(v).ok().and_then(|t| Uuid::try_parse(t).ok());
        if id != Some(event.event_id()) {
            return Err(invalid(ID, format!("{:?} but the value's event_id is {}", shown(v), event.event_id())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_read_when_its_cloudevents_headers_agree_with_its_value_or_it_has_none() {
        let event = Event::OrderPlaced(crate::samples::order_placed());
        let pairs = CeHeaders::for_event(&event, "/orderflow/ingress", None).to_pairs();
        let check =
            |pairs: &[(&'static str, Vec<u8>)]| check_on_read(pairs.iter().map(|(k, v)| (*k, v.as_slice())), &event);
        assert_eq!(check(&pairs), Ok(()));
        assert_eq!(check(&[]), Ok(()), "no ce_* headers: read by the value alone");
        assert_eq!(check(&[(TRACEPARENT, b"whatever".to_vec())]), Ok(()));

        let with = |name: &'static str, value: &str| -> Vec<(&'static str, Vec<u8>)> {
            let mut changed: Vec<_> = pairs.iter().filter(|(k, _)| *k != name).cloned().collect();
            changed.insert(0, (name, value.as_bytes().to_vec()));
            changed
        };
        let refused = |pairs: Vec<(&'static str, Vec<u8>)>| check(&pairs).unwrap_err().to_string();
        let wrong_type = refused(with(TYPE, "orderflow.inventory.changed.v1"));
        assert!(wrong_type.contains("ce_type") && wrong_type.contains("orderflow.order.placed.v1"), "{wrong_type}");
        let wrong_id = refused(with(ID, &Uuid::from_u128(1).to_string()));
        assert!(wrong_id.contains("ce_id") && wrong_id.contains(&event.event_id().to_string()), "{wrong_id}");
        assert!(refused(with(ID, "not-a-uuid")).contains("ce_id"));
        assert!(refused(with(SPECVERSION, "0.3")).contains("ce_specversion"));
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn sample() -> CeHeaders {
        CeHeaders {
            id: Uuid::from_u128(7),
            ce_type: "orderflow.order.placed.v1".into(),
            source: "/orderflow/ingress".into(),
            time: DateTime::parse_from_rfc3339("2026-11-22T13:00:00.5Z").unwrap().with_timezone(&Utc),
            traceparent: Some(TraceParent::parse(TP).unwrap()),
        }
    }

    fn parse(pairs: &[(&'static str, Vec<u8>)]) -> Result<CeHeaders, HeaderError> {
        CeHeaders::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_slice())))
    }

    #[test]
    fn headers_round_trip_through_pairs() {
        let h = sample();
        let pairs = h.to_pairs();
        assert_eq!(pairs[4], (TIME, b"2026-11-22T13:00:00.500Z".to_vec()));
        assert_eq!(parse(&pairs).unwrap(), h);
    }

    #[test]
    fn each_missing_required_header_is_named() {
        for name in [SPECVERSION, ID, TYPE, SOURCE, TIME, CONTENT_TYPE] {
            let pairs: Vec<_> = sample().to_pairs().into_iter().filter(|(k, _)| *k != name).collect();
            assert_eq!(parse(&pairs).unwrap_err(), HeaderError::Missing(name));
        }
        let pairs: Vec<_> = sample().to_pairs().into_iter().filter(|(k, _)| *k != TRACEPARENT).collect();
        assert_eq!(parse(&pairs).unwrap().traceparent, None);
    }

    #[test]
    fn bad_values_are_named() {
        for (name, value) in [
            (SPECVERSION, "0.3"),
            (ID, "x"),
            (TIME, "noon"),
            (CONTENT_TYPE, "application/json"),
            (TRACEPARENT, "00-abc"),
        ] {
            let mut pairs = sample().to_pairs();
            pairs.retain(|(k, _)| *k != name);
            pairs.insert(0, (name, value.as_bytes().to_vec()));
            match parse(&pairs) {
                Err(HeaderError::Invalid { header, .. }) => assert_eq!(header, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        let mut pairs = sample().to_pairs();
        pairs[1].1 = vec![0xff, 0xfe];
        assert_eq!(parse(&pairs).unwrap_err(), HeaderError::Invalid { header: ID, problem: "not UTF-8".into() });
    }

    #[test]
    fn traceparent_format_is_validated() {
        assert_eq!(TraceParent::parse(TP).unwrap().trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "",
        ] {
            assert!(TraceParent::parse(bad).is_err(), "{bad}");
        }
    }
}
