// `redact`, in JavaScript: removes the top-level `data` fields named in the plugin's
// `fields` config (comma-separated, e.g. `ssn,card_number`) and stamps object payloads with
// `"redacted": true`. Other payloads (arrays, strings, numbers) pass unchanged.
//
// Built into a component by componentize-js (StarlingMonkey) for the `transformer` world of
// wit/plugin.wit: `npm run build:redact` (see package.json).
import { config } from 'notify:plugin/host@0.1.0';

const decoder = new TextDecoder();
const encoder = new TextEncoder();

export const transform = {
  transform(ev) {
    const fields = (config('fields') ?? '').split(',').map((f) => f.trim()).filter(Boolean);
    const data = JSON.parse(decoder.decode(ev.data));
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      return { tag: 'keep' };
    }
    for (const field of fields) {
      delete data[field];
    }
    data.redacted = true;
    return { tag: 'rewrite', val: { ...ev, data: encoder.encode(JSON.stringify(data)) } };
  },
};
