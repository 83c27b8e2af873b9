//! Every kind of bad input named by the relay-core issue: each gets a
//! NOTICE / OK false / CLOSED with a prefixed reason, and the connection
//! stays usable (except the slow reader, which is dropped).

mod common;

use common::*;
use echorelay::event::{now, Keys};
use serde_json::{json, Value};

fn reason(msg: &Value) -> &str {
    msg.as_array()
        .and_then(|a| a.last())
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn has_prefix(msg: &Value) -> bool {
    let r = reason(msg);
    [
        "invalid:",
        "blocked:",
        "error:",
        "rate-limited:",
        "auth-required:",
        "restricted:",
        "duplicate:",
    ]
    .iter()
    .any(|p| r.starts_with(p))
}

/// The connection still answers a normal request.
async fn still_usable(c: &mut Raw) {
    let reply = c.ask(json!(["COUNT", "alive", {"kinds": [1]}])).await;
    assert_eq!(
        reply[0], "COUNT",
        "connection unusable after bad input: {reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_notices() {
    let relay = TestRelay::start().await;
    let mut c = relay.client().await;
    let cases: Vec<String> = vec![
        "not json".into(),
        "{\"a\":1}".into(),
        "[]".into(),
        "[1,2]".into(),
        "[\"HELLO\",1]".into(),
        "[\"EVENT\"]".into(),
        "[\"REQ\"]".into(),
        "[\"CLOSE\",1]".into(),
        "[\"EVENT\",\"x\"]".into(),
        "[\"EVENT\",{\"id\":1}]".into(),
        // A raw control character inside a string is not JSON.
        "[\"EVENT\",{\"content\":\"a\u{1}b\"}]".into(),
        "[\"REQ\",\"s\",{\"kinds\":[1]}".into(),
    ];
    for text in cases {
        let reply = c.ask_text(text.clone()).await;
        assert!(
            reply[0] == "NOTICE" || reply[0] == "CLOSED" || reply[0] == "OK",
            "{text}: {reply}"
        );
        assert!(has_prefix(&reply), "{text}: {reply}");
        if reply[0] == "OK" {
            assert_eq!(reply[2], false);
        }
    }
    still_usable(&mut c).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_get_ok_false() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    let good = note(&keys, "base");
    let good_json = good.to_json();
    let id = good.id_hex();

    let mut wrong_id = good.clone();
    wrong_id.content = "changed".into();
    let mut wrong_sig = good.clone();
    wrong_sig.sig[0] ^= 0xff;
    let cases: Vec<(String, &str)> = vec![
        (wrong_id.to_json(), "invalid:"),
        (wrong_sig.to_json(), "invalid:"),
        (
            good_json.replacen(
                &format!("\"pubkey\":\"{}", &hex::encode(keys.public_key())[..2]),
                "\"pubkey\":\"zz",
                1,
            ),
            "invalid:",
        ),
        (
            good_json.replace(
                &format!("\"created_at\":{}", good.created_at),
                "\"created_at\":-5",
            ),
            "invalid:",
        ),
        (
            good_json.replace(
                &format!("\"created_at\":{}", good.created_at),
                "\"created_at\":1e+10",
            ),
            "invalid:",
        ),
        (
            good_json.replace("\"tags\":[]", "\"tags\":[[],[]]"),
            "invalid:",
        ),
        (
            good_json.replace("\"kind\":1", "\"kind\":\"1\""),
            "invalid:",
        ),
    ];
    for (json_text, prefix) in cases {
        let reply = c.ask_text(format!("[\"EVENT\",{json_text}]")).await;
        assert_eq!(reply[0], "OK", "{json_text}: {reply}");
        assert_eq!(reply[1], id.as_str());
        assert_eq!(reply[2], false, "{json_text}");
        assert!(reason(&reply).starts_with(prefix), "{reply}");
    }

    // Far future (properly signed).
    let future = keys.sign(10_000_000_000, 1, vec![], "future".into());
    let reply = c.publish(&future).await;
    assert_eq!(reply[2], false);
    assert!(reason(&reply).contains("future"), "{reply}");

    // Control characters and unusual escapes that are valid JSON survive intact.
    let odd = keys.sign(
        now(),
        1,
        vec![vec!["t".into(), "\u{0}\u{7f}\u{2028}".into()]],
        "\u{1}\u{1f}\t\"\\/é😀".into(),
    );
    // Escapes our serialiser does not produce: \/, \u00e9 and a surrogate pair.
    let text = odd.to_json().replace("/é😀", "\\/\\u00e9\\ud83d\\ude00");
    assert!(text.contains("\\u00e9"), "{text}");
    let reply = c.ask_text(format!("[\"EVENT\",{text}]")).await;
    assert_eq!(reply[2], true, "{reply}");
    let stored = c.req("odd", &[json!({"ids": [odd.id_hex()]})]).await;
    assert_eq!(stored[0]["content"], odd.content);
    assert_eq!(stored[0]["tags"][0][1], "\u{0}\u{7f}\u{2028}");

    // Lone surrogate escapes are not valid JSON strings.
    let lone = good_json.replace("\"content\":\"base\"", "\"content\":\"\\ud800\"");
    let reply = c.ask_text(format!("[\"EVENT\",{lone}]")).await;
    assert!(has_prefix(&reply), "{reply}");
    still_usable(&mut c).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_closed() {
    let relay = TestRelay::start().await;
    let mut c = relay.client().await;
    let many: Vec<Value> = (0..1000).map(|i| json!({"kinds": [i]})).collect();
    let mut msg = vec![json!("REQ"), json!("many")];
    msg.extend(many);
    let reply = c.ask(Value::Array(msg)).await;
    assert_eq!(reply[0], "CLOSED");
    assert_eq!(reply[1], "many");
    assert!(reason(&reply).starts_with("invalid:"), "{reply}");

    let long_id = "x".repeat(65);
    let reply = c.ask(json!(["REQ", long_id, {}])).await;
    assert_eq!(reply[0], "CLOSED");
    assert!(reason(&reply).starts_with("invalid:"));

    for filter in [
        json!({"ids": ["nothex"]}),
        json!({"kinds": [-1]}),
        json!({"since": "yesterday"}),
        json!([1]),
    ] {
        let reply = c.ask(json!(["REQ", "bad", filter])).await;
        assert_eq!(reply[0], "CLOSED", "{filter}: {reply}");
        assert!(reason(&reply).starts_with("invalid:"));
    }
    let reply = c.ask(json!(["COUNT", "bad", {"authors": ["ABC"]}])).await;
    assert_eq!(reply[0], "CLOSED");
    still_usable(&mut c).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages() {
    let relay = TestRelay::start().await;
    let mut c = relay.client().await;
    // 1 MB: above max_message_size (512 KiB) but under the socket hard limit.
    let big = format!("[\"EVENT\",{{\"content\":\"{}\"}}]", "a".repeat(1_000_000));
    let reply = c.ask_text(big).await;
    assert_eq!(reply[0], "NOTICE");
    assert!(
        reason(&reply).starts_with("invalid: message too large"),
        "{reply}"
    );
    still_usable(&mut c).await;

    // Each oversized message is refused in the form its sender waits for.
    let keys = Keys::generate();
    let huge = keys.sign(now(), 1, vec![], "h".repeat(600_000));
    let reply = c.publish(&huge).await;
    assert_eq!(reply[0], "OK", "{reply}");
    assert_eq!(reply[1], huge.id_hex());
    assert_eq!(reply[2], false);
    assert!(reason(&reply).starts_with("invalid: message too large"));
    let many_ids: Vec<String> = (0..9000u32).map(|n| format!("{n:064x}")).collect();
    let reply = c.ask(json!(["REQ", "wide", {"ids": many_ids}])).await;
    assert_eq!(reply, json!(["CLOSED", "wide", reason(&reply)]));
    assert!(reason(&reply).starts_with("invalid: message too large"));
    let reply = c.ask(json!(["COUNT", "wide", {"ids": many_ids}])).await;
    assert_eq!(reply[0], "CLOSED", "{reply}");
    // NEG-OPEN and NEG-MSG have their own, larger limit (8 MiB): 1 MB gets
    // past the size gate (and is then judged as negentropy).
    let neg_open = |hex: String| json!(["NEG-OPEN", "n", {}, hex]);
    let reply = c.ask(neg_open(format!("61{}", "00".repeat(500_000)))).await;
    assert_eq!(reply[0], "NEG-ERR", "{reply}");
    assert!(!reason(&reply).contains("too large"), "{reply}");
    still_usable(&mut c).await;

    // An event over max_event_size (64 KiB) but under the message limit.
    let fat = keys.sign(now(), 1, vec![], "b".repeat(100_000));
    let reply = c.publish(&fat).await;
    assert_eq!(reply[2], false);
    assert!(
        reason(&reply).starts_with("invalid: event is too large"),
        "{reply}"
    );

    // Past the WebSocket hard limit (the larger of 4 × 512 KiB and the 8 MiB
    // negentropy limit): close code 1009. The relay
    // closes before the client finished writing, so write and read at once.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut sink, mut stream) = c.ws.split();
    let writer = tokio::spawn(async move {
        let _ = sink
            .send(Message::Text("c".repeat(9 * 1024 * 1024).into()))
            .await;
    });
    let mut code = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(WAIT, stream.next()).await {
        if let Message::Close(frame) = msg {
            code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(1009));
    writer.abort();
    relay.stop().await;

    // Over the negentropy limit (1 MiB here) but under the socket's: NEG-ERR.
    let relay = TestRelay::start_with(|c| c.limits.max_negentropy_message_size = 1 << 20).await;
    let mut c = relay.client().await;
    let reply = c
        .ask(json!(["NEG-OPEN", "n", {}, "61".repeat(600_000)]))
        .await;
    assert_eq!(reply[0], "NEG-ERR", "{reply}");
    assert!(reason(&reply).starts_with("invalid: message too large"));
    let reply = c.ask(json!(["NEG-MSG", "n", "61".repeat(600_000)])).await;
    assert_eq!(reply, json!(["NEG-ERR", "n", reason(&reply)]));
    assert!(reason(&reply).starts_with("invalid: message too large"));
    still_usable(&mut c).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_closes_with_1007() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::Message;
    let relay = TestRelay::start().await;
    let mut c = relay.client().await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x22], OpCode::Data(Data::Text), true);
    c.ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(c.close_code().await, Some(1007));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_closed_with_1008() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let relay = TestRelay::start().await;
    let mut c = relay.client().await;
    // Each ping is answered with a queued pong: a client that floods them
    // (and need not read) is cut off past its budget.
    for _ in 0..200 {
        if c.ws
            .feed(Message::Ping(vec![7u8; 100].into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = c.ws.flush().await;
    assert_eq!(c.close_code().await, Some(1008));
    // Everyone else is served.
    let mut other = relay.client().await;
    still_usable(&mut other).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_is_echoed_and_nothing_follows_it() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut c = relay.client().await;
    for i in 0..5 {
        c.publish_ok(&note(&keys, &format!("n{i}"))).await;
    }
    // A REQ whose results are still on their way when the client closes.
    c.send(json!(["REQ", "s", {"kinds": [1]}])).await;
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    c.ws.send(Message::Close(Some(close))).await.unwrap();
    let mut after_close = 0;
    let mut echoed = None;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(WAIT, c.ws.next()).await {
        match message {
            Message::Close(frame) => echoed = frame.map(|f| u16::from(f.code)),
            _ if echoed.is_some() => after_close += 1,
            _ => {}
        }
    }
    assert_eq!(echoed, Some(1000));
    assert_eq!(after_close, 0);
    relay.stop().await;
}
