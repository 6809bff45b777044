// By hand (not part of the suite): the Redis traffic of one node's socket
// records while its sockets sit idle, N sockets (env N, 1000) each
// subscribed to 5 pets and watching pet, over SECS (10) seconds, read from
// Redis's own INFO counters. `ZOO_BIN=target/release/zoo node
// tests/e2e/snapshot-traffic.js`.
const { freshDatabase, startZoo, startRedis, connect, request, sleep, freePort } = require('./helpers');
const { execFileSync } = require('node:child_process');
const N = Number(process.env.N || 1000);
function stats(port) {
  const out = execFileSync('redis-cli', ['-p', String(port), 'INFO', 'stats']).toString();
  const get = (k) => Number(out.match(new RegExp(`${k}:(\\d+)`))[1]);
  return { bytes: get('total_net_input_bytes'), cmds: get('total_commands_processed') };
}
(async () => {
  const port = await freePort();
  const redis = await startRedis(port);
  const db = freshDatabase('sqlite');
  const zoo = await startZoo(db.url, { REDIS_URL: `redis://127.0.0.1:${port}/` });
  for (let i = 0; i < 20; i++) await fetch(zoo.url + '/pet', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: `p${i}` }) });
  const socks = [];
  for (let i = 0; i < N; i++) {
    const s = await connect(zoo.url, { headers: { cookie: `topsail.rid=snap${process.pid}x${i}` } });
    await request(s, 'get', '/pet?limit=5');
    socks.push(s);
  }
  await sleep(3000);
  const a = stats(port);
  const secs = Number(process.env.SECS || 10);
  await sleep(secs * 1000);
  const b = stats(port);
  console.log(JSON.stringify({ sockets: N, idle_secs: secs, redis_in_bytes_per_s: Math.round((b.bytes - a.bytes) / secs), redis_cmds_per_s: Math.round((b.cmds - a.cmds) / secs) }));
  for (const s of socks) s.disconnect();
  await zoo.stop();
  redis.kill('SIGKILL');
  db.drop();
  process.exit(0);
})();
