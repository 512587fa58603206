//! Test plugin: every hook allocates without bound. The host's memory cap must stop it.

use notify_plugin_sdk::{Authenticator, ConnectRequest, Deny, Event, Identity, Route, Router, Transform, Transformer};

struct Hog;

fn hog() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        chunk[0] = chunks.len() as u8;
        chunks.push(std::hint::black_box(chunk));
    }
}

impl Authenticator for Hog {
    fn authenticate(_: ConnectRequest) -> Result<Identity, Deny> {
        hog()
    }
}
impl Transformer for Hog {
    fn transform(_: Event) -> Transform {
        hog()
    }
}
impl Router for Hog {
    fn route(_: Event) -> Route {
        hog()
    }
}

notify_plugin_sdk::export_authenticator!(Hog);
notify_plugin_sdk::export_transformer!(Hog);
notify_plugin_sdk::export_router!(Hog);
