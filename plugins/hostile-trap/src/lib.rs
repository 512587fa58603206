//! Test plugin: every hook traps (panics, which aborts the wasm instance).

use notify_plugin_sdk::{Authenticator, ConnectRequest, Deny, Event, Identity, Route, Router, Transform, Transformer};

struct Trap;

impl Authenticator for Trap {
    fn authenticate(_: ConnectRequest) -> Result<Identity, Deny> {
        panic!("hostile-trap: authenticate")
    }
}
impl Transformer for Trap {
    fn transform(_: Event) -> Transform {
        panic!("hostile-trap: transform")
    }
}
impl Router for Trap {
    fn route(_: Event) -> Route {
        panic!("hostile-trap: route")
    }
}

notify_plugin_sdk::export_authenticator!(Trap);
notify_plugin_sdk::export_transformer!(Trap);
notify_plugin_sdk::export_router!(Trap);
