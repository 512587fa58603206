"""`key-auth`, in Python: an `auth` plugin.

A client connects with `?key=K&user=U` (and optionally `&plan=P`); the key must equal the
plugin's `key` config. The user may subscribe to `news` and `user.U.*`, and carries the
attribute `plan` (`free` by default) for route filters. A missing or wrong key is refused
with 401, a missing user with 403.

WIT to Python (componentize-py): `authenticate` returns the `identity` dataclass for `ok`
and raises `Err(deny)` for `err`.
Built for the `authenticator` world of wit/plugin.wit (see scripts/build-plugins.sh).
"""

import hmac
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types


class Auth(exports.Auth):
    def authenticate(self, req: types.ConnectRequest) -> types.Identity:
        query = dict(reversed(req.query))  # the first value of a repeated parameter
        expected, key = host.config("key"), query.get("key")
        if expected is None or key is None or not hmac.compare_digest(key.encode(), expected.encode()):
            host.log(host.Level.INFO, f"refused a connection from {req.remote_addr}: no valid key")
            raise Err(types.Deny(status=401, reason="a valid key is required"))
        user = query.get("user")
        if not user:
            raise Err(types.Deny(status=403, reason="user is required"))
        return types.Identity(
            user=user,
            channels=["news", f"user.{user}.*"],
            attributes=[("plan", query.get("plan", "free"))],
            expires_at=int(time.time()) + 3600,
        )
