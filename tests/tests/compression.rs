//! WebSocket compression (permessage-deflate, RFC 7692) against raw sockets: what is
//! negotiated, which frames come compressed, one event reaching compressed and plain
//! subscribers alike, compressed client messages, and the frames that close a connection.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use notify_tests::{DEMO, RawClient, TestHost, published};
use serde_json::{Value, json};

const OFFER: (&str, &str) = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits");
const RSV1: u8 = 0x40;

/// A raw DEFLATE message as a client sends it: compressed on its own, the sync flush's
/// empty block taken off.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&[data, &[0, 0, 0xff, 0xff]].concat(), &mut out, FlushDecompress::Sync).unwrap();
    out
}

/// Connects `user` of the demo tenant with `headers`; reads the welcome.
async fn join(host: &TestHost, user: &str, headers: &[(&str, &str)]) -> anyhow::Result<RawClient> {
    let (status, mut client) = RawClient::connect_with(host.addr, &format!("/v1/ws/demo?user={user}"), headers).await?;
    anyhow::ensure!(status == 101, "upgrade refused: {}", client.head);
    let (first, welcome) = client.read_raw_frame().await?;
    assert_eq!(first, 0x81, "the welcome is a plain text frame");
    assert_eq!(serde_json::from_slice::<Value>(&welcome)?["type"], "welcome");
    Ok(client)
}

/// The next text frame's JSON, and whether it came compressed.
async fn next(client: &mut RawClient) -> anyhow::Result<(Value, bool)> {
    loop {
        let (first, payload) = client.read_raw_frame().await?;
        match first & 0x0f {
            0x1 if first & RSV1 != 0 => return Ok((serde_json::from_slice(&inflate(&payload))?, true)),
            0x1 => return Ok((serde_json::from_slice(&payload)?, false)),
            _ => continue,
        }
    }
}

fn extension(client: &RawClient) -> Option<String> {
    client
        .head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-extensions")))
        .map(|(_, v)| v.trim().to_owned())
}

#[tokio::test]
async fn one_broadcast_reaches_compressed_and_plain_subscribers_and_small_events_stay_plain() -> anyhow::Result<()> {
    let host = TestHost::start(&format!("{DEMO}compression = {{ min_bytes = 400 }}\n")).await?;
    let mut deflating = join(&host, "ann", &[OFFER]).await?;
    let mut plain = join(&host, "bob", &[]).await?;
    assert_eq!(
        extension(&deflating).as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    assert_eq!(extension(&plain), None);

    let text = "Ihre Bestellung wurde versandt — 注文は発送されました. ".repeat(20);
    let large = json!({"broadcast": true, "event": "order.shipped", "data": {"order": "A-1042", "text": text}});
    published(host.addr, "demo-key", &large).await?;
    let (compressed, was_compressed) = next(&mut deflating).await?;
    let (uncompressed, was_plain_compressed) = next(&mut plain).await?;
    assert!(was_compressed, "a large event comes compressed");
    assert!(!was_plain_compressed, "never to a client that did not negotiate");
    assert_eq!(compressed, uncompressed, "the same event either way");
    assert_eq!(compressed["data"]["text"], text);
    assert_eq!(host.metric("notify_frames_compressed_total").await?, 1.0, "compressed once");
    let before = host.metric("notify_compression_bytes_total{side=\"in\"}").await?;
    let after = host.metric("notify_compression_bytes_total{side=\"out\"}").await?;
    assert!(after < before / 2.0, "{before} bytes compressed to {after}");

    published(host.addr, "demo-key", &json!({"broadcast": true, "event": "tick", "data": 1})).await?;
    let (small, was_compressed) = next(&mut deflating).await?;
    assert!(!was_compressed, "under compression.min_bytes (about 150 bytes): plain");
    assert_eq!(small["event"], "tick");
    Ok(())
}

#[tokio::test]
async fn compressed_client_messages_are_read_whole_or_fragmented() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    let mut client = join(&host, "ann", &[OFFER]).await?;
    let subscribe = deflate(br#"{"type":"subscribe","channel":"news"}"#);
    client.send_raw_frame(0x80 | RSV1 | 0x1, &subscribe).await?;
    let reply = next(&mut client).await?.0;
    assert_eq!((&reply["type"], &reply["channel"]), (&json!("subscribed"), &json!("news")));

    // RSV1 on the first fragment only; a ping between the fragments.
    let subscribe = deflate(br#"{"type":"subscribe","channel":"sports"}"#);
    let (a, b) = subscribe.split_at(subscribe.len() / 2);
    client.send_raw_frame(RSV1 | 0x1, a).await?;
    client.send_raw_frame(0x80 | 0x9, b"between").await?;
    client.send_raw_frame(0x80, b).await?;
    let reply = next(&mut client).await?.0;
    assert_eq!((&reply["type"], &reply["channel"]), (&json!("subscribed"), &json!("sports")));

    // Plain messages still work on a connection that negotiated compression.
    client.send_frame(0x1, br#"{"type":"unsubscribe","channel":"news"}"#).await?;
    assert_eq!(next(&mut client).await?.0, json!({"type": "unsubscribed", "channel": "news"}));
    Ok(())
}

#[tokio::test]
async fn a_bomb_corrupt_data_and_rsv1_without_negotiation_close_the_connection() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    // 30 MB of zeros in a frame of about 30 KB, under the 64 KiB message limit: closed once
    // inflating passes the limit, not inflated whole.
    let bomb = {
        let mut c = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(1 << 20);
        for _ in 0..30 {
            c.compress_vec(&vec![0u8; 1 << 20], &mut out, FlushCompress::None).unwrap();
        }
        c.compress_vec(&[], &mut out, FlushCompress::Sync).unwrap();
        out
    };
    assert!(bomb.len() < 60_000, "{} bytes", bomb.len());
    let mut client = join(&host, "ann", &[OFFER]).await?;
    client.send_raw_frame(0x80 | RSV1 | 0x1, &bomb).await?;
    assert_eq!(client.close_code().await?, 1009);

    let mut client = join(&host, "ann", &[OFFER]).await?;
    client.send_raw_frame(0x80 | RSV1 | 0x1, &[0xff; 64]).await?;
    assert_eq!(client.close_code().await?, 1007);

    let mut client = join(&host, "ann", &[]).await?;
    client.send_raw_frame(0x80 | RSV1 | 0x1, &deflate(br#"{"type":"ping"}"#)).await?;
    assert_eq!(client.close_code().await?, 1002, "RSV1 without the extension");

    let mut client = join(&host, "ann", &[OFFER]).await?;
    client.send_raw_frame(0x80 | RSV1 | 0x9, b"x").await?;
    assert_eq!(client.close_code().await?, 1002, "RSV1 on a control frame");

    // The host still serves everyone else.
    let mut client = join(&host, "ann", &[OFFER]).await?;
    client.send_frame(0x1, br#"{"type":"ping"}"#).await?;
    assert_eq!(next(&mut client).await?.0["type"], "pong");
    Ok(())
}

#[tokio::test]
async fn a_tenant_with_compression_off_and_unmeetable_offers_negotiate_nothing() -> anyhow::Result<()> {
    let toml = format!("{DEMO}compression = {{ enabled = false }}\n");
    let host = TestHost::start(&toml).await?;
    let client = join(&host, "ann", &[OFFER]).await?;
    assert_eq!(extension(&client), None);

    let host = TestHost::start(DEMO).await?;
    let small_window = ("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=10");
    let client = join(&host, "ann", &[small_window]).await?;
    assert_eq!(extension(&client), None, "every message shares one window of 2^15");
    let then_plain = ("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=10, permessage-deflate");
    let client = join(&host, "ann", &[then_plain]).await?;
    assert!(extension(&client).is_some(), "the next offer is taken");
    Ok(())
}
