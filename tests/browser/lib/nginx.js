'use strict';
// Debian's nginx in front of the daemon, as docs and the package show it:
// packaging/nginx/pagewire-map.conf and pagewire-location.conf, with the
// daemon's address put in. Its own prefix, config and logs in a temporary
// directory, a free port, in the foreground (`daemon off`), stopped by the
// test.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const { REPO } = require('./daemon');
const { until } = require('./wait');

const NGINX = process.env.NGINX_BIN || '/usr/sbin/nginx';
const SNIPPETS = path.join(REPO, 'packaging', 'nginx');

/** A port nobody listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

class Nginx {
  /** @param {string} upstream the daemon's `HOST:PORT` */
  constructor(upstream) {
    this.upstream = upstream;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pagewire-nginx-'));
    // nginx's workers run as nobody when the tests run as root: they
    // must reach the temporary directories inside.
    fs.chmodSync(this.dir, 0o755);
    this.proc = null;
    this.output = '';
    this.port = 0;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The access log so far. */
  accessLog() {
    try {
      return fs.readFileSync(path.join(this.dir, 'access.log'), 'utf8');
    } catch {
      return '';
    }
  }

  writeConfig() {
    const location = fs
      .readFileSync(path.join(SNIPPETS, 'pagewire-location.conf'), 'utf8')
      .replace('http://127.0.0.1:8080;', `http://${this.upstream};`);
    if (!location.includes(this.upstream)) throw new Error('pagewire-location.conf has no proxy_pass to 127.0.0.1:8080');
    fs.writeFileSync(path.join(this.dir, 'location.conf'), location);
    fs.copyFileSync(path.join(SNIPPETS, 'pagewire-map.conf'), path.join(this.dir, 'map.conf'));
    const d = this.dir;
    const user = process.getuid() === 0 ? 'user nobody nogroup;\n' : '';
    const conf = `${user}daemon off;
worker_processes 1;
pid ${d}/nginx.pid;
error_log ${d}/error.log info;
events { worker_connections 64; }
http {
  access_log ${d}/access.log;
  client_body_temp_path ${d}/body;
  proxy_temp_path ${d}/proxy;
  fastcgi_temp_path ${d}/fastcgi;
  uwsgi_temp_path ${d}/uwsgi;
  scgi_temp_path ${d}/scgi;
  include ${d}/map.conf;
  server {
    listen 127.0.0.1:${this.port};
    include ${d}/location.conf;
  }
}
`;
    fs.writeFileSync(path.join(d, 'nginx.conf'), conf);
  }

  /** Starts nginx on a free port and waits until it passes a request on. */
  async start() {
    for (let attempt = 0; ; attempt++) {
      this.port = await freePort();
      this.writeConfig();
      const proc = spawn(NGINX, ['-p', this.dir, '-e', path.join(this.dir, 'error.log'), '-c', path.join(this.dir, 'nginx.conf')], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      this.proc = proc;
      proc.stdout.on('data', (c) => (this.output += c));
      proc.stderr.on('data', (c) => (this.output += c));
      const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve(signal || code)));
      try {
        await until(
          `nginx on port ${this.port} to pass /status/healthz on`,
          async () => {
            if (proc.exitCode !== null) throw new Error(`nginx exited: ${this.log()}`);
            const res = await fetch(`${this.url}/status/healthz`).catch(() => null);
            return res && res.status === 200;
          },
          30000
        );
        return this;
      } catch (err) {
        proc.kill('SIGKILL');
        await exited;
        // Someone took the port between the probe and nginx: try another.
        if (attempt < 5 && /in use/i.test(this.log())) continue;
        throw new Error(`${err.message}\n${this.log()}`);
      }
    }
  }

  /** nginx's own output and error log, for failure messages. */
  log() {
    let errors = '';
    try {
      errors = fs.readFileSync(path.join(this.dir, 'error.log'), 'utf8');
    } catch {
      // not written yet
    }
    return `${this.output}${errors}`;
  }

  /** Stops nginx (a fast shutdown) and removes its directory. */
  async dispose() {
    const proc = this.proc;
    this.proc = null;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10000);
      await exited;
      clearTimeout(timer);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

module.exports = { Nginx };
