// A client written against the types generated from the served document: if the document
// loses a route, a field or a code this uses, or the generator rejects it, this fails to
// compile.
import type { components, operations, paths } from "./generated/notify";

type PublishBody = paths["/v1/publish"]["post"]["requestBody"]["content"]["application/json"];
type Accepted = paths["/v1/publish"]["post"]["responses"][202]["content"]["application/json"];
type ErrorCode = components["schemas"]["ErrorCode"];

const body: PublishBody = { users: ["alice"], event: "order.updated", data: { order: 42 } };
const retryable: ErrorCode[] = ["rate_limited", "draining", "broker_unavailable"];

type Tenants = operations["listTenants"]["responses"][200]["content"]["application/json"];

export async function publish(base: string, key: string): Promise<string> {
  const res = await fetch(`${base}/v1/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (res.status === 202) return ((await res.json()) as Accepted).id;
  const error = (await res.json()) as components["schemas"]["ErrorBody"];
  const again = retryable.includes(error.error.code) ? " (retry later)" : "";
  throw new Error(`${error.error.code}: ${error.error.message}${again}`);
}

export function tenantIds(tenants: Tenants): string[] {
  return tenants.tenants.map((t) => t.id);
}
