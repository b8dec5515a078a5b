// Renders /api/v1/openapi.json as a browsable page: operations grouped by tag, each with
// its parameters, request body and response schemas. No dependencies, text nodes only.

import { $, fill, h } from "./common.js";

let doc = null;

function resolve(schema) {
  if (schema && schema.$ref) return doc.components.schemas[schema.$ref.split("/").pop()];
  return schema;
}

/** A compact, readable rendering of a JSON schema (as a pseudo-type string). */
function typeOf(schema, depth = 0, seen = new Set()) {
  if (!schema) return "any";
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    if (seen.has(name) || depth > 3) return name;
    return `${name} ${typeOf(resolve(schema), depth, new Set([...seen, name]))}`;
  }
  if (schema.oneOf) return schema.oneOf.map((s) => typeOf(s, depth, seen)).join(" | ");
  if (schema.allOf) return schema.allOf.map((s) => typeOf(s, depth, seen)).join(" & ") + (schema.properties ? " & " + typeOf({ ...schema, allOf: undefined }, depth, seen) : "");
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.type === "array") return `[${typeOf(schema.items, depth + 1, seen)}]`;
  if (schema.type === "object" && schema.properties) {
    const req = new Set(schema.required || []);
    const pad = "  ".repeat(depth + 1);
    const lines = Object.entries(schema.properties).map(([k, v]) => `${pad}${k}${req.has(k) ? "" : "?"}: ${typeOf(v, depth + 1, seen)}`);
    return `{\n${lines.join(",\n")}\n${"  ".repeat(depth)}}`;
  }
  return schema.type || "any";
}

function render(filter = "") {
  const f = filter.toLowerCase();
  const byTag = new Map();
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, o] of Object.entries(methods)) {
      const tag = (o.tags || ["other"])[0];
      const hay = `${method} ${path} ${tag} ${o.summary}`.toLowerCase();
      if (f && !hay.includes(f)) continue;
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, o]);
    }
  }
  const out = [];
  for (const [tag, ops] of byTag) {
    out.push(h("h2", {}, tag));
    for (const [path, method, o] of ops) {
      const body = [];
      if (o.description) body.push(h("p", {}, o.description));
      body.push(h("p", { class: "small muted" }, o.security && o.security.length ? "Authorization: Bearer <jwt>" : "public"));
      if (o.parameters) {
        body.push(h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "parameter"), h("th", {}, "in"), h("th", {}, "type"), h("th", {}, "notes"))),
          h("tbody", {}, o.parameters.map((p) => h("tr", {}, h("td", {}, h("code", {}, p.name)), h("td", {}, p.in), h("td", {}, typeOf(p.schema)), h("td", {}, `${p.required ? "required. " : ""}${p.description || ""}`))))));
      }
      if (o.requestBody) {
        body.push(h("div", { class: "small muted" }, "request body"));
        body.push(h("pre", {}, typeOf(o.requestBody.content["application/json"].schema)));
      }
      for (const [status, r] of Object.entries(o.responses)) {
        const c = r.content && Object.values(r.content)[0];
        body.push(h("div", { class: "small" }, h("b", {}, status), ` ${r.description}`));
        if (c && status.startsWith("2")) body.push(h("pre", {}, typeOf(c.schema)));
      }
      out.push(h("details", { class: "op" },
        h("summary", {}, h("span", { class: `method ${method}` }, method), h("code", {}, path), h("span", { class: "muted" }, o.summary)),
        h("div", { class: "body" }, body)));
    }
  }
  fill($("#ops"), out.length ? out : h("p", {}, "No operation matches."));
}

async function main() {
  const res = await fetch("/api/v1/openapi.json");
  doc = await res.json();
  fill($("#intro"), `${doc.info.title} · OpenAPI ${doc.openapi} · ${Object.keys(doc.paths).length} paths. ${doc.info.description}`);
  render();
  $("#filter").addEventListener("input", (e) => render(e.target.value));
}

main();
