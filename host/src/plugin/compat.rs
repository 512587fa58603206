//! Components built against `notify:plugin@0.1.0`: which version a hook's export is, and
//! each 0.1.0 hook called through the current types. A 0.1.0 event has no `push`: the guest
//! sees the event without it, and its rewrite keeps the push the event had.

use wasmtime::Store;

use super::bindings::{StoreState, types, v0_1};
use super::push;

/// A hook's export, of the version its component was built against.
pub(crate) enum Versioned<C, O> {
    Current(C),
    V0_1(O),
}

pub(crate) async fn authenticate(
    guest: &v0_1::auth::Guest,
    store: &mut Store<StoreState>,
    req: types::ConnectRequest<'_>,
) -> wasmtime::Result<Result<types::Identity, types::Deny>> {
    let req = v0_1::types::ConnectRequest {
        tenant: req.tenant,
        path: req.path,
        headers: req.headers,
        query: req.query,
        remote_addr: req.remote_addr,
    };
    Ok(match guest.call_authenticate(store, req).await? {
        Ok(id) => Ok(types::Identity {
            user: id.user,
            channels: id.channels,
            attributes: id.attributes,
            expires_at: id.expires_at,
        }),
        Err(deny) => Err(types::Deny { status: deny.status, reason: deny.reason }),
    })
}

pub(crate) async fn transform(
    guest: &v0_1::transform::Guest,
    store: &mut Store<StoreState>,
    ev: types::EventParam<'_>,
) -> wasmtime::Result<types::TransformResult> {
    let kept = ev.push.as_ref().map(push::owned);
    Ok(match guest.call_transform(store, event(ev)).await? {
        v0_1::types::TransformResult::Keep => types::TransformResult::Keep,
        v0_1::types::TransformResult::Drop => types::TransformResult::Drop,
        v0_1::types::TransformResult::Rewrite(new) => types::TransformResult::Rewrite(types::EventResult {
            id: new.id,
            name: new.name,
            data: new.data,
            attributes: new.attributes,
            users: new.users,
            channels: new.channels,
            broadcast: new.broadcast,
            push: kept,
        }),
    })
}

pub(crate) async fn route(
    guest: &v0_1::route::Guest,
    store: &mut Store<StoreState>,
    ev: types::EventParam<'_>,
) -> wasmtime::Result<types::RouteDecision> {
    let decision = guest.call_route(store, event(ev)).await?;
    Ok(types::RouteDecision {
        drop: decision.drop,
        targets: decision.targets.map(|t| types::Targets {
            users: t.users,
            channels: t.channels,
            broadcast: t.broadcast,
        }),
        filter: decision.filter.into_iter().map(clause).collect(),
    })
}

fn event(ev: types::EventParam<'_>) -> v0_1::types::EventParam<'_> {
    v0_1::types::EventParam {
        id: ev.id,
        name: ev.name,
        data: ev.data,
        attributes: ev.attributes,
        users: ev.users,
        channels: ev.channels,
        broadcast: ev.broadcast,
    }
}

fn clause(c: v0_1::types::Clause) -> types::Clause {
    use v0_1::types::Op;
    let op = match c.op {
        Op::Eq => types::Op::Eq,
        Op::Ne => types::Op::Ne,
        Op::In => types::Op::In,
        Op::NotIn => types::Op::NotIn,
        Op::Exists => types::Op::Exists,
    };
    types::Clause { key: c.key, op, values: c.values }
}
