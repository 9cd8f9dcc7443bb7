// Validates AsyncAPI documents with the official parser (@asyncapi/parser, pinned in
// package.json): prints every diagnostic and exits 1 if any is an error.
// Usage: node .ci/asyncapi/validate.mjs FILE...
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const severities = ["error", "warning", "info", "hint"];
const parser = new Parser();
let failed = false;
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(readFileSync(file, "utf8"), { source: file });
  for (const d of diagnostics) {
    console.log(`${file}: ${severities[d.severity]}: ${d.code}: ${d.message} at ${d.path.join(".")}`);
  }
  const errors = diagnostics.filter((d) => d.severity === 0).length;
  if (document === undefined || errors > 0) {
    console.log(`${file}: INVALID (${errors} error(s))`);
    failed = true;
  } else {
    console.log(`${file}: valid AsyncAPI ${document.version()}, ${document.channels().length} channel(s), ${document.messages().length} message(s)`);
  }
}
process.exit(failed ? 1 : 0);
