//! Test plugin: every hook waits an hour in a WASI clock wait, where no epoch tick can
//! interrupt it. The host must still end each call.

use notify_plugin_sdk::{Authenticator, ConnectRequest, Deny, Event, Identity, Route, Router, Transform, Transformer};

struct Sleep;

fn sleep() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

impl Authenticator for Sleep {
    fn authenticate(_: ConnectRequest) -> Result<Identity, Deny> {
        sleep()
    }
}
impl Transformer for Sleep {
    fn transform(_: Event) -> Transform {
        sleep()
    }
}
impl Router for Sleep {
    fn route(_: Event) -> Route {
        sleep()
    }
}

notify_plugin_sdk::export_authenticator!(Sleep);
notify_plugin_sdk::export_transformer!(Sleep);
notify_plugin_sdk::export_router!(Sleep);
