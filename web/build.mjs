// Copies Leaflet's prebuilt dist files into the folder the API serves, so browsers never need a CDN.
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "node_modules", "leaflet", "dist");
const out = join(here, "..", "service", "web", "vendor");

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "images"), { recursive: true });
for (const name of ["leaflet.js", "leaflet.css", "LICENSE"]) {
  cpSync(join(here, "node_modules", "leaflet", name === "LICENSE" ? name : join("dist", name)), join(out, name));
}
cpSync(join(dist, "images"), join(out, "images"), { recursive: true });
console.log(`leaflet copied to ${out}`);
