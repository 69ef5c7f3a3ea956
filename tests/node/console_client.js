// A plain Node client using the `ws` package, as Node wrappers for Pterodactyl do.
// Usage: node console_client.js <ws url> <token> <origin>
// Authenticates, starts the server, waits for the ready line, sends a command, checks the
// reply, stops the server, and prints one JSON summary line.
const WebSocket = require('ws');

const [url, token, origin] = process.argv.slice(2);
const ws = new WebSocket(url, { origin });
const seen = [];
let phase = 'auth';
const timer = setTimeout(() => { console.log(JSON.stringify({ ok: false, phase, seen: seen.slice(-10) })); process.exit(1); }, 20000);

const send = (event, ...args) => ws.send(JSON.stringify({ event, args }));

ws.on('open', () => send('auth', token));
ws.on('message', (data, isBinary) => {
  if (isBinary) return;
  const msg = JSON.parse(data.toString());
  seen.push(msg.event);
  const arg = (msg.args || [])[0] || '';
  if (msg.event === 'auth success' && phase === 'auth') { phase = 'start'; send('set state', 'start'); }
  else if (msg.event === 'status' && arg === 'running' && phase === 'start') { phase = 'command'; send('send command', 'say from node'); }
  else if (msg.event === 'console output' && arg.includes('[Server] from node') && phase === 'command') { phase = 'stop'; send('set state', 'stop'); }
  else if (msg.event === 'status' && arg === 'offline' && phase === 'stop') {
    phase = 'done';
    clearTimeout(timer);
    console.log(JSON.stringify({ ok: true, events: [...new Set(seen)] }));
    ws.close(1000);
  }
});
ws.on('error', (e) => { console.log(JSON.stringify({ ok: false, error: String(e) })); process.exit(1); });
