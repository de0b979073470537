// Copies Swagger UI's and ReDoc's prebuilt files into the folder the API serves at /apidocs/, so the /docs
// and /redoc pages load nothing from a CDN (FastAPI's defaults do).
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const out = join(here, "..", "service", "apidocs");

const files = [
  ["swagger-ui-dist", "swagger-ui-bundle.js", "swagger-ui-bundle.js"],
  ["swagger-ui-dist", "swagger-ui.css", "swagger-ui.css"],
  ["swagger-ui-dist", "favicon-32x32.png", "favicon-32x32.png"],
  ["swagger-ui-dist", "LICENSE", "LICENSE.swagger-ui"],
  ["swagger-ui-dist", "NOTICE", "NOTICE.swagger-ui"],
  ["redoc", join("bundles", "redoc.standalone.js"), "redoc.standalone.js"],
  ["redoc", "LICENSE", "LICENSE.redoc"],
];

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
for (const [pkg, from, to] of files) {
  cpSync(join(modules, pkg, from), join(out, to));
}
console.log(`API docs assets copied to ${out}`);
