// Starts the reference Bluesky PDS (@atproto/dev-env's TestNetworkNoAppView, in-memory PLC) on
// 127.0.0.1 only, with its data under TMPDIR (the caller sets TMPDIR to a folder it owns).
// When ready, prints ONE line of JSON to stdout:
//   {"pds":"http://127.0.0.1:PORT","plc":"http://127.0.0.1:PORT2"}
// then runs until stdin closes or it gets SIGTERM/SIGINT. Everything else goes to stderr.
// Run it from the folder .ci/pds-install prints:  TMPDIR=... <dir>/bin/node <dir>/start.mjs
import net from 'node:net';

// Everything written to stdout (console.log, loggers) goes to stderr; only the JSON line is not.
const stdoutWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);

// The servers call listen(port) on all interfaces: force 127.0.0.1.
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args.length === 0 || typeof args[0] === 'function') {
    args = [0, '127.0.0.1', ...args];
  } else if (typeof args[0] === 'object' && args[0] !== null) {
    const o = args[0];
    if (o.path === undefined && o.fd === undefined && o._handle === undefined && o.handle === undefined) {
      args[0] = { ...o, host: '127.0.0.1' };
    }
  } else if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    const port = Number(args[0]);
    const rest = args.slice(1);
    if (typeof rest[0] === 'string' || rest[0] === undefined || rest[0] === null) rest.shift();
    args = [port, '127.0.0.1', ...rest];
  }
  return listen.apply(this, args);
};

const freePort = () =>
  new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });

let stopping = false;
// Exits at once: the data lives in the caller's TMPDIR, and closing the servers gracefully takes
// seconds (open connections are drained). Ports and files are released by the exit itself.
const stop = (why) => {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`pds: stopping (${why})\n`);
  process.exit(0);
};
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
process.stdin.on('end', () => stop('stdin closed'));
process.stdin.on('close', () => stop('stdin closed'));
process.stdin.on('error', () => stop('stdin error'));
process.stdin.resume();

// The package's index also loads the AppView and Ozone (about 2 s and 60 MB more): load only the
// module with TestNetworkNoAppView, or the whole package if a later version moved it.
const loadDevEnv = async () => {
  const file = new URL('./node_modules/@atproto/dev-env/dist/network-no-appview.js', import.meta.url);
  try {
    return await import(file);
  } catch (err) {
    if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !String(err.message).includes(file.pathname)) throw err;
    return await import('@atproto/dev-env');
  }
};

try {
  const { TestNetworkNoAppView } = await loadDevEnv();
  const plcPort = await freePort();
  const network = await TestNetworkNoAppView.create({
    plc: { port: plcPort },
    pds: { didPlcUrl: `http://127.0.0.1:${plcPort}` },
  });
  const line = JSON.stringify({
    pds: `http://127.0.0.1:${network.pds.port}`,
    plc: `http://127.0.0.1:${plcPort}`,
  });
  process.stderr.write(`pds: ready after ${Math.round(performance.now())} ms: ${line}\n`);
  stdoutWrite(line + '\n');
} catch (err) {
  process.stderr.write(`pds: failed to start: ${err?.stack ?? err}\n`);
  process.exit(1);
}
