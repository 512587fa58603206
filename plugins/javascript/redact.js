// `redact`, in JavaScript: removes the top-level `data` fields named in the plugin's
// `fields` config (comma-separated, e.g. `ssn,card_number`) and stamps object payloads with
// `"redacted": true`. Other payloads (arrays, strings, numbers) pass unchanged.
// With `push_title_field` set (e.g. `headline`), a payload whose field of that name is text
// is pushed to the addressed users' devices under that title (the event's `push`: a record
// whose fields are optional, `undefined` when not given); the rest of the publisher's push,
// if any, stays.
//
// Built into a component by componentize-js (StarlingMonkey) for the `transformer` world of
// wit/plugin.wit: `npm run build:redact` (see package.json).
import { config } from 'notify:plugin/host@0.2.0';

const decoder = new TextDecoder();
const encoder = new TextEncoder();

export const transform = {
  transform(ev) {
    const fields = (config('fields') ?? '').split(',').map((f) => f.trim()).filter(Boolean);
    const data = JSON.parse(decoder.decode(ev.data));
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      return { tag: 'keep' };
    }
    const titleField = config('push_title_field');
    const title = titleField === undefined ? undefined : data[titleField];
    const push = typeof title === 'string' ? { ...ev.push, title } : ev.push;
    for (const field of fields) {
      delete data[field];
    }
    data.redacted = true;
    return { tag: 'rewrite', val: { ...ev, data: encoder.encode(JSON.stringify(data)), push } };
  },
};
