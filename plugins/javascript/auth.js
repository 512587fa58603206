// `key-auth`, in JavaScript: an `auth` plugin. A client connects with `?key=K&user=U`
// (and optionally `&plan=P`); the key must equal the plugin's `key` config. The user may
// subscribe to `news` and `user.U.*`, and carries the attribute `plan` (`free` by default)
// for route filters. A missing or wrong key is refused with 401, a missing user with 403.
//
// WIT to JavaScript (componentize-js): `authenticate` returns the `identity` record for `ok`
// and throws the `deny` record for `err`; `option<u64>` is a BigInt or `undefined`.
// Built for the `authenticator` world of wit/plugin.wit: `npm run build:auth`.
import { config, log } from 'notify:plugin/host@0.2.0';

/** Compares two strings in time that does not depend on where they differ. */
function same(a, b) {
  let differ = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i += 1) {
    differ |= (a.charCodeAt(i) || 0) ^ (b.charCodeAt(i) || 0);
  }
  return differ === 0;
}

export const auth = {
  authenticate(req) {
    const param = (name) => req.query.find(([key]) => key === name)?.[1];
    const expected = config('key');
    const key = param('key');
    if (expected === undefined || key === undefined || !same(key, expected)) {
      log('info', `refused a connection from ${req.remoteAddr}: no valid key`);
      throw { status: 401, reason: 'a valid key is required' };
    }
    const user = param('user');
    if (!user) {
      throw { status: 403, reason: 'user is required' };
    }
    return {
      user,
      channels: ['news', `user.${user}.*`],
      attributes: [['plan', param('plan') ?? 'free']],
      expiresAt: BigInt(Math.floor(Date.now() / 1000) + 3600),
    };
  },
};
