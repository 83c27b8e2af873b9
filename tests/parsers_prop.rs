//! The fuzz targets' properties as proptest cases, so every `cargo test`
//! throws random and mutated input at the network parsers.

use echorelay::event::{Event, Keys};
use echorelay::filter::Filter;
use echorelay::relay::messages::{
    addressee, message_type, neg_open_filters, parse_client_message, Addressee, ClientMessage,
    ParseLimits,
};
use proptest::prelude::*;

const LIMITS: ParseLimits = ParseLimits {
    max_filters: 32,
    max_subid_length: 64,
};

fn valid_event_json() -> String {
    Keys::generate()
        .sign(
            1_700_000_000,
            1,
            vec![vec!["t".into(), "x".into()]],
            "hello".into(),
        )
        .to_json()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn server_sent_events_read_the_same_in_any_split(
        stream in proptest::collection::vec(prop_oneof![
            Just(b'\n'), Just(b':'), Just(b' '), Just(b'\r'), any::<u8>(),
            Just(b'd'), Just(b'a'), Just(b't'),
        ], 0..400),
        cut in 0usize..400,
    ) {
        use echorelay::echo::sse::SseParser;
        let cut = cut.min(stream.len());
        let (mut whole, mut split) = (Vec::new(), Vec::new());
        SseParser::default().feed(&stream, |e| whole.push(e));
        let mut parser = SseParser::default();
        parser.feed(&stream[..cut], |e| split.push(e));
        parser.feed(&stream[cut..], |e| split.push(e));
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn any_text_never_panics(text in ".{0,300}") {
        let _ = parse_client_message(&text, &LIMITS);
        let _ = Filter::from_json(&text);
        let _ = Event::from_json(&text);
        let _ = message_type(&text);
        let _ = addressee(&text);
        if let Ok(raw) = serde_json::from_str::<Box<serde_json::value::RawValue>>(&text) {
            let _ = neg_open_filters(&raw, 32);
        }
    }

    #[test]
    fn an_oversized_message_is_read_back_as_what_it_is(
        sub in "[a-z0-9]{1,20}",
        pad in 0usize..2000,
        kind in 0usize..4,
    ) {
        let filler = "x".repeat(pad);
        let id = "ab".repeat(32);
        let (text, want) = match kind {
            0 => (
                format!(r#"["EVENT",{{"content":"{filler}","id":"{id}"}}]"#),
                Addressee::Event(id),
            ),
            1 => (format!(r##"["REQ","{sub}",{{"#t":["{filler}"]}}]"##), Addressee::Query(sub.clone())),
            2 => (format!(r#"["NEG-MSG","{sub}","61{filler}"]"#), Addressee::Negentropy(sub.clone())),
            _ => (format!(r#"["CLOSE","{sub}","{filler}"]"#), Addressee::Unknown),
        };
        prop_assert_eq!(addressee(&text), want);
        prop_assert!(message_type(&text).is_some());
    }

    #[test]
    fn mutated_nip98_headers_never_panic_nor_pass(pos in 0usize..2000, byte in any::<u8>()) {
        use base64::Engine;
        let event = Keys::generate().sign(
            echorelay::event::now(),
            27235,
            vec![
                vec!["u".into(), "http://node.example/echo/push".into()],
                vec!["method".into(), "POST".into()],
                vec!["payload".into(), "ab".repeat(32)],
            ],
            String::new(),
        );
        let mut json = event.to_json().into_bytes();
        let pos = pos % json.len();
        json[pos] = byte;
        let header = base64::engine::general_purpose::STANDARD.encode(&json);
        let verdict = echorelay::auth::check_nip98(&header, "POST", "/echo/push", "node.example");
        if let Ok(event) = echorelay::auth::decode_nip98(&header) {
            let _ = echorelay::auth::nip98_payload(&event);
        }
        // A mutation passes only if it changed nothing that was signed.
        if let Ok(passed) = verdict {
            prop_assert_eq!(passed, event);
        }
    }

    #[test]
    fn mutated_event_messages_never_panic(pos in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
        let mut bytes = format!("[\"EVENT\",{}]", valid_event_json()).into_bytes();
        let pos = pos % bytes.len();
        bytes[pos] = byte;
        bytes.truncate(cut.max(1).min(bytes.len()));
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if let Ok(ClientMessage::Event(raw)) = parse_client_message(text, &LIMITS) {
                if let Ok(event) = Event::from_raw(raw) {
                    let _ = event.verify();
                    prop_assert_eq!(Event::from_json(&event.to_json()).unwrap(), event);
                }
            }
        }
    }

    #[test]
    fn negentropy_messages_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600), frame in prop_oneof![Just(0usize), Just(4096usize)]) {
        use echorelay::negentropy::{Diff, Item, Negentropy, VectorStorage};
        let storage = VectorStorage::new((0u8..40).map(|i| Item::new(1_000 + (i / 3) as u64, [i; 32])).collect());
        let mut responder = Negentropy::new(&storage, frame).unwrap();
        let _ = responder.reconcile(&data);
        let mut with_version = vec![0x61];
        with_version.extend_from_slice(&data);
        let _ = responder.reconcile(&with_version);
        let mut initiator = Negentropy::new(&storage, frame).unwrap();
        initiator.initiate().unwrap();
        let _ = initiator.reconcile_initiator(&with_version, &mut Diff::default());
    }

    #[test]
    fn filters_round_trip(kinds in proptest::collection::vec(0u16..=u16::MAX, 0..5),
                          since in proptest::option::of(0u64..u64::MAX / 2),
                          limit in proptest::option::of(0u64..10_000),
                          tag in "[a-zA-Z]", values in proptest::collection::vec(".{0,20}", 0..4)) {
        let mut obj = serde_json::json!({"kinds": kinds});
        if let Some(s) = since { obj["since"] = s.into(); }
        if let Some(l) = limit { obj["limit"] = l.into(); }
        obj[format!("#{tag}")] = values.into();
        let filter = Filter::from_value(&obj).unwrap();
        prop_assert_eq!(Filter::from_value(&filter.to_value()).unwrap(), filter);
    }
}
