//! `segment-router`: an event with attribute `plan` (one plan or a comma-separated list)
//! reaches only subscribers whose `plan` attribute is one of them. Events without it are
//! delivered as addressed.
//!
//! Config: `attribute` (optional) routes on another attribute name instead of `plan`.
//! The host evaluates the filter natively; this plugin runs once per event.

use notify_plugin_sdk::{Clause, Event, Route, Router, config};

struct SegmentRouter;

impl Router for SegmentRouter {
    fn route(ev: Event) -> Route {
        let key = config("attribute").unwrap_or_else(|| "plan".into());
        match ev.attribute(&key) {
            Some(values) => Route::keep().filter(Clause::any_of(key.as_str(), values.split(',').map(str::trim))),
            None => Route::keep(),
        }
    }
}

notify_plugin_sdk::export_router!(SegmentRouter);
