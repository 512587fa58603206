// `plan-router`, in JavaScript: a `route` plugin.
// - An event named `internal.*` is dropped.
// - An event with the attribute `plan` (e.g. `pro` or `pro,team`) reaches only subscribers
//   whose own `plan` attribute is one of those values. The host evaluates the filter itself,
//   once per distinct set of subscriber attributes; this function runs once per event.
// - An event with the attribute `channel` goes to that channel instead of its own targets.
//
// WIT to JavaScript (componentize-js): records are objects with camel-case fields, `option`
// is the value or `undefined`, `list<tuple<string, string>>` is an array of pairs, an enum
// case is its name as a string (`"in"`, `"not-in"`).
// Built for the `router` world of wit/plugin.wit: `npm run build:route` (see package.json).

export const route = {
  route(ev) {
    const attribute = (name) => ev.attributes.find(([key]) => key === name)?.[1];
    if (ev.name.startsWith('internal.')) {
      return { drop: true, targets: undefined, filter: [] };
    }
    const plan = attribute('plan');
    const filter = plan === undefined ? [] : [{ key: 'plan', op: 'in', values: plan.split(',').map((p) => p.trim()) }];
    const channel = attribute('channel');
    const targets = channel === undefined ? undefined : { users: [], channels: [channel], broadcast: false };
    return { drop: false, targets, filter };
  },
};
