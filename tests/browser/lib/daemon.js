'use strict';
// Starts the real pagewire daemon for a test and drives it with the real CLI.

const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');
const BIN = process.env.PAGEWIRE_BIN || path.join(REPO, 'target', 'debug', 'pagewire');
const SITE = path.join(__dirname, '..', 'site');

/**
 * A copy of the test site with the npm package's module (client/index.js)
 * at /pagewire/index.js, as a bundler would ship it; removed after the
 * calling file's tests.
 */
function siteWithPackage() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pagewire-package-site-'));
  fs.cpSync(SITE, root, { recursive: true });
  fs.mkdirSync(path.join(root, 'pagewire'));
  fs.copyFileSync(path.join(REPO, 'client', 'index.js'), path.join(root, 'pagewire', 'index.js'));
  require('node:test').after(() => fs.rmSync(root, { recursive: true, force: true }));
  return root;
}

const READY = /pagewire listening on (http:\/\/\S+) \(control socket (.+)\)/;
const START_TIMEOUT_MS = 30000;

class Daemon {
  /**
   * @param {object} [opts]
   * @param {string|null} [opts.root] directory to serve; null for the demo site
   * @param {string} [opts.config] TOML text of a configuration file to use
   */
  constructor(opts = {}) {
    this.root = opts.root === undefined ? null : opts.root;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pagewire-test-'));
    this.control = path.join(this.dir, 'ctl.sock');
    this.config = null;
    if (opts.config) {
      this.config = path.join(this.dir, 'pagewire.toml');
      fs.writeFileSync(this.config, opts.config);
    }
    this.port = 0;
    this.url = null;
    this.proc = null;
    this.output = ''; // stdout and stderr of every run, for failure messages
  }

  /** Starts the daemon; on `port` 0 a free port is picked and kept for restarts. */
  async start() {
    // Right after a kill the port can still be held for a moment.
    const deadline = Date.now() + 10000;
    for (;;) {
      try {
        await this.spawnOnce();
        return this;
      } catch (err) {
        if (this.port === 0 || Date.now() > deadline || !/in use/i.test(err.message)) throw err;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  spawnOnce() {
    // A state directory of its own, kept across restarts of this daemon
    // and never the user's.
    const args = ['serve', '--listen', `127.0.0.1:${this.port}`, '--control', this.control,
      '--state-dir', path.join(this.dir, 'state')];
    if (this.root) args.push('--root', this.root);
    if (this.config) args.push('--config', this.config);
    const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    return new Promise((resolve, reject) => {
      let pending = '';
      let ready = false;
      let stderr = '';
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`pagewire did not report listening within ${START_TIMEOUT_MS} ms\n${this.output}`));
      }, START_TIMEOUT_MS);
      proc.stdout.setEncoding('utf8');
      proc.stderr.setEncoding('utf8');
      proc.stdout.on('data', (chunk) => {
        this.output += chunk;
        if (ready) return;
        pending += chunk;
        const match = READY.exec(pending);
        if (match) {
          ready = true;
          clearTimeout(timer);
          this.url = match[1];
          this.port = Number(new URL(this.url).port);
          resolve();
        }
      });
      proc.stderr.on('data', (chunk) => {
        this.output += chunk;
        stderr += chunk;
      });
      proc.on('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot run ${BIN}: ${err.message}`));
      });
      proc.on('exit', (code, signal) => {
        if (ready) return;
        clearTimeout(timer);
        reject(new Error(`pagewire exited (${signal || code}) before listening: ${stderr.trim()}`));
      });
    });
  }

  /** Stops the daemon: SIGKILL (a crash) by default, SIGTERM for a clean shutdown. */
  async stop(signal = 'SIGKILL') {
    const proc = this.proc;
    this.proc = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill(signal);
    // A clean shutdown that hangs is ended the hard way.
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10000);
    await exited;
    clearTimeout(timer);
  }

  /** Stops the daemon and removes its temporary directory. */
  async dispose() {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** Runs `pagewire --control PATH ARGS...`: resolves to { code, stdout, stderr }. */
  cli(...args) {
    return new Promise((resolve) => {
      execFile(BIN, ['--control', this.control, ...args], { timeout: 15000 }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** Like cli(), but fails unless the command succeeded. */
  async ok(...args) {
    const res = await this.cli(...args);
    if (res.code !== 0) {
      throw new Error(`pagewire ${args.join(' ')} exited ${res.code}: ${res.stdout}${res.stderr}`);
    }
    return res.stdout;
  }

  /**
   * The `ws` listing as [{ index, line }]: one entry per connection (the
   * lines that start with the index; "no WebSocket connections" has none).
   */
  async connections() {
    const out = await this.ok('ws');
    return out
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => /^\d/.test(line))
      .map((line) => ({ index: Number(/^\d+/.exec(line)[0]), line }));
  }
}

/**
 * Whether a `ws` listing line shows `name` as one of its names: from its
 * `names=a,b` field when it has one, else from any blank- or comma-separated
 * word of the line.
 */
function lineHasName(line, name) {
  const field = /(?:^|\s)names=(\S*)/.exec(line);
  const words = field ? field[1].split(',') : line.split(/[\s,]+/);
  return words.includes(name);
}

module.exports = { Daemon, lineHasName, siteWithPackage, BIN, REPO, SITE };
