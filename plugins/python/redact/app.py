"""`redact`, in Python: removes the top-level `data` fields named in the plugin's `fields`
config (comma-separated, e.g. `ssn,card_number`) and stamps object payloads with
`"redacted": true`. Other payloads (arrays, strings, numbers) pass unchanged.
With `push_title_field` set (e.g. `headline`), a payload whose field of that name is text is
pushed to the addressed users' devices under that title (the event's `push`, a `types.Push`
dataclass whose fields are `None` when not given); the rest of the publisher's push, if any,
stays.

Built into a component by componentize-py for the `transformer` world of wit/plugin.wit
(see scripts/build-plugins.sh).
"""

import dataclasses
import json

from wit_world import exports
from wit_world.imports import host, types

# componentize-py runs this module when it builds the component and keeps the memory it
# leaves: the first use of the json codec (its lazy imports and caches) happens here, at
# build time, instead of in the first call of every instance.
json.dumps(json.loads('{"warm":[1,"x",{"y":null}]}'), separators=(",", ":"))

NO_PUSH = types.Push(when=None, delay_ms=None, title=None, body=None, icon=None, url=None, collapse_key=None,
                     ttl_ms=None, urgency=None)


class Transform(exports.Transform):
    def transform(self, ev: types.Event) -> types.TransformResult:
        fields = [f.strip() for f in (host.config("fields") or "").split(",") if f.strip()]
        data = json.loads(ev.data)
        if not isinstance(data, dict):
            return types.TransformResult_Keep()
        title = data.get(host.config("push_title_field") or "")
        if isinstance(title, str):
            ev.push = dataclasses.replace(ev.push or NO_PUSH, title=title)
        for field in fields:
            data.pop(field, None)
        data["redacted"] = True
        ev.data = json.dumps(data, separators=(",", ":")).encode()
        return types.TransformResult_Rewrite(ev)
