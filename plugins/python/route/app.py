"""`plan-router`, in Python: a `route` plugin.

- An event named `internal.*` is dropped.
- An event with the attribute `plan` (e.g. `pro` or `pro,team`) reaches only subscribers
  whose own `plan` attribute is one of those values. The host evaluates the filter itself,
  once per distinct set of subscriber attributes; this method runs once per event.
- An event with the attribute `channel` goes to that channel instead of its own targets.

WIT to Python (componentize-py): records are dataclasses with snake-case fields, `option` is
the value or `None`, `list<tuple<string, string>>` is a list of tuples, enums are `Enum`s.
Built for the `router` world of wit/plugin.wit (see scripts/build-plugins.sh).
"""

from wit_world import exports
from wit_world.imports import types


class Route(exports.Route):
    def route(self, ev: types.Event) -> types.RouteDecision:
        attributes = dict(reversed(ev.attributes))  # the first value of a repeated key
        if ev.name.startswith("internal."):
            return types.RouteDecision(drop=True, targets=None, filter=[])
        plan = attributes.get("plan")
        filter = [] if plan is None else [types.Clause("plan", types.Op.IN, [p.strip() for p in plan.split(",")])]
        channel = attributes.get("channel")
        targets = None if channel is None else types.Targets(users=[], channels=[channel], broadcast=False)
        return types.RouteDecision(drop=False, targets=targets, filter=filter)
