//! Test plugin: every hook loops forever. The host must cut each call at its deadline.

use notify_plugin_sdk::{Authenticator, ConnectRequest, Deny, Event, Identity, Route, Router, Transform, Transformer};

struct Spin;

fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

impl Authenticator for Spin {
    fn authenticate(_: ConnectRequest) -> Result<Identity, Deny> {
        spin()
    }
}
impl Transformer for Spin {
    fn transform(_: Event) -> Transform {
        spin()
    }
}
impl Router for Spin {
    fn route(_: Event) -> Route {
        spin()
    }
}

notify_plugin_sdk::export_authenticator!(Spin);
notify_plugin_sdk::export_transformer!(Spin);
notify_plugin_sdk::export_router!(Spin);
