'use strict';
// ws.js as an npm package (client/): the built files match their one source,
// `npm pack` ships what an application needs and nothing else, and a typed
// example application compiles with `tsc --noEmit` against the packed
// package. No browser here; esm.test.js runs the module in Chromium.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

const { REPO } = require('./lib/daemon');

const CLIENT = path.join(REPO, 'client');
const TSC = path.join(CLIENT, 'node_modules', '.bin', 'tsc');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pagewire-package-'));

after(() => fs.rmSync(work, { recursive: true, force: true }));

function npm(args, cwd = CLIENT) {
  return execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

test('assets/ws.js and client/index.js are what client/src/ws.js builds', async () => {
  const { build, OUTPUTS } = await import(pathToFileURL(path.join(CLIENT, 'build.mjs')).href);
  const built = build();
  for (const file of OUTPUTS) {
    const text = fs.readFileSync(path.join(REPO, file), 'utf8');
    assert.ok(text.startsWith('// Built from client/src/ws.js'), `${file} does not say it is built`);
    // Not assert.equal: a diff of two 15 KB texts would bury the message.
    assert.ok(text === built[file], `${file} is out of date with client/src/ws.js: run node client/build.mjs`);
  }
  // The same check from the command line.
  const check = spawnSync(process.execPath, [path.join(CLIENT, 'build.mjs'), '--check'], { encoding: 'utf8' });
  assert.equal(check.status, 0, check.stderr);
});

test('the package is pagewire at the crate version, an ES module with types and no dependencies', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(CLIENT, 'package.json'), 'utf8'));
  const crate = /^version = "([^"]+)"/m.exec(fs.readFileSync(path.join(REPO, 'Cargo.toml'), 'utf8'))[1];
  assert.equal(pkg.name, 'pagewire');
  assert.equal(pkg.version, crate);
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.license, 'MIT OR Apache-2.0');
  assert.deepEqual(pkg.exports, { '.': { types: './index.d.ts', default: './index.js' } });
  assert.equal(pkg.types, './index.d.ts');
  assert.equal(pkg.dependencies, undefined);
  assert.equal(pkg.peerDependencies, undefined);
  assert.equal(pkg.optionalDependencies, undefined);
});

test('npm pack ships the module, its types, the README and package.json, nothing else', () => {
  const [report] = JSON.parse(npm(['pack', '--dry-run', '--json']));
  assert.equal(report.name, 'pagewire');
  assert.deepEqual(report.files.map((f) => f.path).sort(), ['README.md', 'index.d.ts', 'index.js', 'package.json']);
});

test('a typed example application compiles with tsc --noEmit against the packed package', () => {
  // Pack for real, and install the tarball as an application would get it.
  const packed = JSON.parse(npm(['pack', '--json', '--pack-destination', work]))[0].filename;
  const app = path.join(work, 'app');
  const installed = path.join(app, 'node_modules', 'pagewire');
  fs.mkdirSync(installed, { recursive: true });
  execFileSync('tar', ['-xzf', path.join(work, packed), '-C', installed, '--strip-components=1']);
  for (const file of ['app.ts', 'tsconfig.json']) {
    fs.copyFileSync(path.join(CLIENT, 'example', file), path.join(app, file));
  }
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ private: true, type: 'module' }));

  // A bundler's resolution (the example's own tsconfig), then Node's.
  for (const extra of [[], ['--module', 'nodenext', '--moduleResolution', 'nodenext']]) {
    const tsc = spawnSync(TSC, ['-p', app, '--noEmit', '--listFiles', ...extra], { encoding: 'utf8' });
    assert.equal(tsc.status, 0, `tsc ${extra.join(' ')} failed:\n${tsc.stdout}${tsc.stderr}`);
    // The types came from the package as packed, not from the source tree.
    assert.ok(
      tsc.stdout.split('\n').includes(path.join(installed, 'index.d.ts')),
      `tsc did not read the packed index.d.ts:\n${tsc.stdout}`
    );
  }
});
