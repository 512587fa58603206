//! The server API's history reads: a backend pages through a user's, a channel's or the
//! broadcast stream after a position, on one node and on another node in cluster mode.

use notify_tests::{DEMO, RedisServer, Req, TestHost};
use serde_json::{Value, json};

async fn read(host: &TestHost, path: &str) -> anyhow::Result<(u16, Value)> {
    Req::get(format!("/v1/streams/{path}")).key("demo-key").reply(host.addr).await
}

/// Publishes `n` events to bob and to `news`, then pages through both from `reader`.
async fn pages_after_positions(publisher: &TestHost, reader: &TestHost) -> anyhow::Result<()> {
    for i in 1..=5 {
        publisher.publish_ok(&json!({ "users": ["bob"], "channels": ["news"], "event": "e", "data": i })).await?;
    }
    let (status, page) = read(reader, "users/bob?limit=2").await?;
    assert_eq!(status, 200, "{page}");
    let data = |page: &Value| page["events"].as_array().unwrap().iter().map(|e| e["data"].clone()).collect::<Vec<_>>();
    assert_eq!(data(&page), [json!(1), json!(2)]);
    assert_eq!(
        (page["more"].clone(), page["recovered"].clone(), page["latest"]["offset"].clone()),
        (json!(true), json!(true), json!(5))
    );
    assert_eq!(page["events"][0]["user"], "bob");
    let next = page["next"].as_str().unwrap().to_owned();
    assert!(next.ends_with(":2"), "{next}");

    let (_, rest) = read(reader, &format!("users/bob?after={next}")).await?;
    assert_eq!(data(&rest), [json!(3), json!(4), json!(5)]);
    assert_eq!(rest["more"], false);
    let (_, news) = read(reader, "channels/news?limit=1000").await?;
    assert_eq!(news["events"].as_array().unwrap().len(), 5);
    assert_eq!(news["events"][4]["channel"], "news");
    let (_, empty) = read(reader, "broadcast").await?;
    assert_eq!(empty["events"], json!([]));

    let (status, body) = read(reader, "users/bob?after=garbage").await?;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")));
    let (status, _) = read(reader, "users/bob?limit=0").await?;
    assert_eq!(status, 400);
    let (status, _) = Req::get("/v1/streams/users/bob").key("wrong-key").reply(reader.addr).await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test]
async fn a_backend_pages_through_history_on_one_node() -> anyhow::Result<()> {
    let host = TestHost::start(DEMO).await?;
    pages_after_positions(&host, &host).await
}

#[tokio::test]
async fn a_backend_reads_on_one_node_what_another_published() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let toml = format!("{DEMO}\n{}", redis.broker_toml());
    let [a, b] = notify_tests::ready_hosts(&toml).await?;
    pages_after_positions(&a, &b).await
}
