#!/usr/bin/env node
/**
 * Builds a JavaScript task module: `node build.mjs [DIR]` (default `example`) turns
 * `DIR/app.js` into the component that `DIR/taskbox.toml` names (`component = ...`, else
 * `DIR/<name of DIR>.wasm`).
 *
 * The component targets the `taskbox:task` world cut down to the capabilities the manifest
 * grants: taskbox refuses a component that imports `sql`, `events`, `jobs` or `wasi:http`
 * without the grant, and componentize-js imports every interface of its world.
 *
 * componentize-js embeds the JavaScript in StarlingMonkey, whose WASI preview 1 calls go
 * through an adapter. Its default adapter imports `wasi:filesystem`, which taskbox refuses,
 * so this script uses the adapter's "proxy" build instead: the same calls, with no file
 * system (they answer "not supported") and no environment. That adapter comes from the
 * crates.io crate `wasi-preview1-component-adapter-provider`, fetched with cargo, at the
 * version of the host's wasmtime. Last, the script checks that the component imports only
 * what the host provides.
 *
 * Every job runs in a fresh copy of the component as it was pre-initialised at build time,
 * so work that JavaScript does lazily on first use is redone by every job unless it was
 * done before the snapshot. The script therefore warms up the builtins that the generated
 * bindings of `run` use on each call (see {@link BINDINGS_WARM_UP}); the guest library
 * does the same for its own code.
 */

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fsPromises, { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { componentize } from '@bytecodealliance/componentize-js';
import { componentWit } from '@bytecodealliance/jco';
import { parse as parseToml } from 'smol-toml';

/** The crate that ships wasmtime's WASI preview 1 adapters, at the host's wasmtime version. */
const ADAPTER_CRATE = 'wasi-preview1-component-adapter-provider';
const ADAPTER_VERSION = '48.0.8';
const ADAPTER_FILE = 'artefacts/wasi_snapshot_preview1.proxy.wasm';
const ADAPTER_SHA256 = '9d2e1b455ad17ac4e00b3ecf255b88aa2ad44c34170ef87395daf448e374fa2e';

/** The imports the host provides: any of these interfaces at any 0.2.x version. */
const PROVIDED_IMPORTS = [
  /^wasi:(io|clocks|random)\/[a-z-]+@0\.2\.\d+$/,
  /^wasi:cli\/(exit|environment|stdin|stdout|stderr|terminal-[a-z-]+)@0\.2\.\d+$/,
  /^wasi:http\/(types|outgoing-handler)@0\.2\.\d+$/,
  /^taskbox:task\/[a-z-]+@0\.1\.\d+$/,
];

/** The `taskbox:task` interfaces behind a manifest grant, by `[capabilities]` field. */
const GRANTED_INTERFACES = { sql: 'sql', event_channels: 'events', enqueue: 'jobs' };

/**
 * Run once at pre-initialisation, after componentize-js's bindings script and in its realm
 * (which is not the app's): the builtins the bindings of `run` touch on every call. A realm
 * creates a builtin class, its prototype and its self-hosted methods on first use; made
 * here, they are part of the snapshot instead of being made again by each job. (It took the
 * example's no-op job from 958 to 489 thousand WebAssembly instructions, counted with
 * `taskbox run --fuel`.)
 */
const BINDINGS_WARM_UP = `
// Added by taskbox's guests/js/build.mjs: see BINDINGS_WARM_UP there.
{
  const buffer = new ArrayBuffer(16);
  const bytes = new Uint8Array(buffer, 0, 8);
  bytes.set(new Uint8Array(buffer.slice(8, 16)));
  new DataView(buffer).setInt8(0, 0, true);
  BigInt.asUintN(64, BigInt(0));
  Array.isArray(bytes);
  (async () => {
    await null;
  })();
}
`;

/**
 * The file name componentize-js (0.23) writes its generated bindings script to before it
 * pre-initialises the component with it.
 */
const BINDINGS_FILE = 'initializer.js';

const here = dirname(fileURLToPath(import.meta.url));
const witDir = resolve(here, '../../wit');

/**
 * The proxy adapter's path, fetched into cargo's registry cache if it is not there yet.
 *
 * @returns {Promise<string>}
 */
async function proxyAdapter() {
  const project = await mkdtemp(join(tmpdir(), 'taskbox-adapter-'));
  try {
    await writeFile(
      join(project, 'Cargo.toml'),
      `[package]\nname = "adapter"\nversion = "0.0.0"\nedition = "2021"\n\n` +
        `[lib]\npath = "lib.rs"\n\n[dependencies]\n${ADAPTER_CRATE} = "=${ADAPTER_VERSION}"\n\n` +
        '[workspace]\n',
    );
    await writeFile(join(project, 'lib.rs'), '');
    const metadata = JSON.parse(
      execFileSync(
        'cargo',
        ['metadata', '--quiet', '--format-version', '1', '--manifest-path', join(project, 'Cargo.toml')],
        { cwd: here, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
      ),
    );
    const crate = metadata.packages.find((pkg) => pkg.name === ADAPTER_CRATE);
    const path = join(dirname(crate.manifest_path), ADAPTER_FILE);
    const digest = createHash('sha256').update(await readFile(path)).digest('hex');
    if (digest !== ADAPTER_SHA256) {
      throw new Error(`${path} has SHA-256 ${digest}, expected ${ADAPTER_SHA256}`);
    }
    return path;
  } finally {
    await rm(project, { recursive: true, force: true });
  }
}

/**
 * Writes a WIT package into `dir` whose world `module` is `taskbox:task`'s world `task`
 * with only the capabilities that `capabilities` grants, and the WIT it depends on.
 *
 * @param {string} dir An empty directory.
 * @param {Record<string, unknown[]>} capabilities The manifest's `[capabilities]`.
 * @returns {Promise<boolean>} Whether the world imports `wasi:http`.
 */
async function writeWorld(dir, capabilities) {
  const contract = await readFile(join(witDir, 'task.wit'), 'utf8');
  const granted = (field) => (capabilities[field] ?? []).length > 0;
  const imports = ['log', 'progress', 'config'];
  for (const [field, name] of Object.entries(GRANTED_INTERFACES)) {
    if (granted(field)) imports.push(name);
  }
  const lines = imports.map((name) => `  import taskbox:task/${name}@0.1.0;`);
  const http = granted('allowed_outbound_hosts');
  if (http) lines.push(contract.match(/^\s*import wasi:http\/outgoing-handler@.*;$/m)[0]);
  lines.push(contract.match(/^\s*export run: .*;$/m)[0]);
  await writeFile(
    join(dir, 'module.wit'),
    'package taskbox:js-module;\n\nworld module {\n' +
      '  use taskbox:task/types@0.1.0.{job-info, task-error};\n' +
      `${lines.join('\n')}\n}\n`,
  );
  await cp(join(witDir, 'deps'), join(dir, 'deps'), { recursive: true });
  await cp(join(witDir, 'task.wit'), join(dir, 'deps', 'taskbox', 'task.wit'));
  return http;
}

/**
 * The component's imports, as `wasm-tools component wit` names them.
 *
 * @param {Uint8Array} component
 * @returns {Promise<string[]>}
 */
async function importsOf(component) {
  const wit = await componentWit(component);
  return wit
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.startsWith('import '))
    .map((line) => line.slice('import '.length).replace(/;$/, ''));
}

/**
 * Calls `build` while componentize-js's bindings script gets {@link BINDINGS_WARM_UP}
 * appended as it is written. componentize-js has no option for code run in the bindings'
 * realm, so this intercepts its `writeFile` of {@link BINDINGS_FILE}; if a later version
 * no longer writes that file, the build fails here rather than quietly producing slower
 * components.
 *
 * @template T
 * @param {() => Promise<T>} build
 * @returns {Promise<T>}
 */
async function withWarmBindings(build) {
  const write = fsPromises.writeFile;
  let warmed = 0;
  fsPromises.writeFile = (path, data, ...options) => {
    if (basename(String(path)) === BINDINGS_FILE) {
      warmed += 1;
      return write(path, `${data}\n${BINDINGS_WARM_UP}`, ...options);
    }
    return write(path, data, ...options);
  };
  syncBuiltinESMExports();
  try {
    const result = await build();
    if (warmed !== 1) {
      throw new Error(
        `componentize-js wrote its bindings to ${warmed} files named ${BINDINGS_FILE}, ` +
          'expected 1: update BINDINGS_FILE in build.mjs for this componentize-js version',
      );
    }
    return result;
  } finally {
    fsPromises.writeFile = write;
    syncBuiltinESMExports();
  }
}

/**
 * Componentizes `DIR/app.js` for the world its manifest grants, written into `wit`.
 *
 * @param {string} moduleDir The module's directory.
 * @param {Record<string, any>} manifest Its `taskbox.toml`.
 * @param {string} wit An empty directory for the world.
 * @returns {Promise<Uint8Array>} The component.
 */
async function componentizeModule(moduleDir, manifest, wit) {
  const http = await writeWorld(wit, manifest.capabilities ?? {});
  // componentize-js resolves the app's imports (`../taskbox.js`) against the working directory.
  process.chdir(here);
  try {
    const preview2Adapter = await proxyAdapter();
    const { component } = await withWarmBindings(() =>
      componentize({
        sourcePath: join(moduleDir, 'app.js'),
        witPath: wit,
        worldName: 'module',
        // The world exports `run`, not `wasi:http/incoming-handler`; without a grant for
        // outbound HTTP, `fetch` is left out too.
        disableFeatures: http ? ['fetch-event'] : ['fetch-event', 'http'],
        preview2Adapter,
      }),
    );
    return component;
  } catch (error) {
    const used = /Error loading module "taskbox:task\/([a-z-]+)@/.exec(error.message)?.[1];
    const field = Object.keys(GRANTED_INTERFACES).find((key) => GRANTED_INTERFACES[key] === used);
    if (field === undefined) throw error;
    throw new Error(
      `the app uses taskbox:task/${used}, which its manifest does not grant: ` +
        `add \`capabilities.${field}\` to ${join(moduleDir, 'taskbox.toml')}`,
    );
  }
}

/** Builds the module named on the command line and writes its component. */
async function main() {
  const moduleDir = resolve(here, process.argv[2] ?? 'example');
  const manifest = parseToml(await readFile(join(moduleDir, 'taskbox.toml'), 'utf8'));
  const output = resolve(moduleDir, manifest.component ?? `${basename(moduleDir)}.wasm`);

  const wit = await mkdtemp(join(tmpdir(), 'taskbox-wit-'));
  let component;
  try {
    component = await componentizeModule(moduleDir, manifest, wit);
  } finally {
    await rm(wit, { recursive: true, force: true });
  }

  const imports = await importsOf(component);
  const refused = imports.filter((name) => !PROVIDED_IMPORTS.some((ok) => ok.test(name)));
  if (refused.length > 0) {
    throw new Error(`the component imports what taskbox does not provide: ${refused.join(', ')}`);
  }
  await writeFile(output, component);
  console.log(`${output}: ${(component.length / 2 ** 20).toFixed(1)} MiB`);
  console.log(`imports: ${imports.join(', ')}`);
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});
