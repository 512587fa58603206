//! `server.demo`: the browser demo and the JavaScript client it imports are served only when
//! the switch is on (its behaviour in a browser: clients/js/browser-test).

use notify_tests::{DEMO, Req, TestHost};

#[tokio::test]
async fn the_demo_is_served_only_when_switched_on() -> anyhow::Result<()> {
    let off = TestHost::start(DEMO).await?;
    assert_eq!(Req::get("/demo").send(off.addr).await?.0, 404);
    assert_eq!(Req::get("/demo/notify.js").send(off.addr).await?.0, 404);

    let on = TestHost::start(&format!("[server]\ndemo = true\n{DEMO}")).await?;
    let (status, headers, page) = Req::get("/demo").send(on.addr).await?;
    assert_eq!((status, headers["content-type"].to_str()?), (200, "text/html; charset=utf-8"));
    assert!(String::from_utf8(page.to_vec())?.contains(r#"import { NotifyClient } from "/demo/notify.js""#));
    let (status, headers, sdk) = Req::get("/demo/notify.js").send(on.addr).await?;
    assert_eq!((status, headers["content-type"].to_str()?), (200, "text/javascript; charset=utf-8"));
    assert!(String::from_utf8(sdk.to_vec())?.contains("export class NotifyClient"));
    Ok(())
}
