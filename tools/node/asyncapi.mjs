// Validates asyncapi/asyncapi.yaml with the AsyncAPI parser (Avro payloads included)
// and renders it: `node asyncapi.mjs validate|json|html`.
import { mkdirSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Parser, fromFile, stringify } from '@asyncapi/parser';
import { AvroSchemaParser } from '@asyncapi/avro-schema-parser';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const source = join(root, 'asyncapi', 'asyncapi.yaml');
const out = join(root, 'asyncapi', 'dist');
const mode = process.argv[2] ?? 'validate';

const parser = new Parser();
parser.registerSchemaParser(AvroSchemaParser());
const { document, diagnostics } = await fromFile(parser, source).parse();

// Severity 0 is an error, 1 a warning; both fail validation so the document stays clean.
const problems = diagnostics.filter((d) => d.severity <= 1);
for (const d of problems) {
  console.error(`${d.severity === 0 ? 'error' : 'warning'} ${d.code} at ${d.path.join('.')}: ${d.message}`);
}
if (!document || problems.length > 0) {
  console.error(`asyncapi.yaml: ${problems.length} problem(s)`);
  process.exit(1);
}

const channels = document.channels().length;
const messages = document.components().messages().length;
if (mode === 'validate') {
  console.log(`asyncapi.yaml is valid AsyncAPI ${document.version()}: ${channels} channels, ${messages} message types`);
  process.exit(0);
}

mkdirSync(out, { recursive: true });
// The fully resolved document: every $ref (Avro schemas too) inlined.
const json = JSON.stringify(document.json(), null, 2);
if (mode === 'json') {
  writeFileSync(join(out, 'asyncapi.json'), json);
  console.log(`wrote asyncapi/dist/asyncapi.json`);
} else if (mode === 'html') {
  const component = join(here, 'node_modules', '@asyncapi', 'react-component');
  copyFileSync(join(component, 'browser', 'standalone', 'without-parser.js'), join(out, 'asyncapi-ui.js'));
  copyFileSync(join(component, 'styles', 'default.min.css'), join(out, 'asyncapi-ui.css'));
  // The page gets the document already parsed here (Avro payloads resolved, in the
  // parser's own stringified form): the standalone renderer without a parser cannot
  // read YAML, and one with a parser would not know Avro.
  const html = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>pmcore events (AsyncAPI)</title>
  <link rel="stylesheet" href="asyncapi-ui.css">
</head>
<body>
  <div id="asyncapi"></div>
  <script src="asyncapi-ui.js"></script>
  <script>
    AsyncApiStandalone.render({
      schema: ${JSON.stringify(stringify(document)).replace(/</g, '\\u003c')},
      config: { show: { sidebar: true } },
    }, document.getElementById('asyncapi'));
  </script>
</body>
</html>
`;
  writeFileSync(join(out, 'asyncapi.json'), json);
  writeFileSync(join(out, 'index.html'), html);
  console.log('wrote asyncapi/dist/index.html (open it in a browser; it works offline)');
} else {
  console.error(`unknown mode ${mode}: use validate, json or html`);
  process.exit(2);
}
