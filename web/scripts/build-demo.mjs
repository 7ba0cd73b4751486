// Builds the demo page into demo/dist, which the Go package
// github.com/grpcws/grpcws/web embeds: index.html, and the bundled script
// and style sheet, named by a hash of their content.
//
// The build is reproducible: a pinned esbuild, fixed options, no
// timestamps, no source maps with absolute paths. `make checkgenerate`
// rebuilds it and fails if the result differs from the committed files.

import { build } from "esbuild";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const demo = join(root, "demo");
const out = join(demo, "dist");

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });

const result = await build({
  absWorkingDir: root,
  entryPoints: ["demo/main.ts"],
  outdir: out,
  entryNames: "[name]-[hash]",
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022", "chrome100", "firefox100", "safari15"],
  platform: "browser",
  charset: "utf8",
  legalComments: "none",
  sourcemap: false,
  metafile: true,
  logLevel: "warning",
});

const assets = Object.keys(result.metafile.outputs).map((p) => basename(p)).sort();
const js = assets.find((a) => a.endsWith(".js"));
const css = assets.find((a) => a.endsWith(".css"));
if (js === undefined || css === undefined) {
  throw new Error(`build-demo: want one .js and one .css, got ${assets.join(", ")}`);
}

const template = await readFile(join(demo, "index.html"), "utf8");
const tags = `<link rel="stylesheet" href="${css}">\n<script type="module" src="${js}"></script>`;
if (!template.includes("<!-- assets -->")) {
  throw new Error("build-demo: demo/index.html has no <!-- assets --> placeholder");
}
await writeFile(join(out, "index.html"), template.replace("<!-- assets -->", tags));

for (const a of [...assets, "index.html"]) {
  console.log(`demo/dist/${a}`);
}
