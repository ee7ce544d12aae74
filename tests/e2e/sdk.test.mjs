// End-to-end tests of gpuproxyd through the official `openai` npm package (v4), with node:test.
//
//   cd tests/e2e && npm ci        # once: installs openai@4 from package-lock.json
//   node --test tests/e2e/        # from the repository root
//
// Starts the fake upstream (tests/fakes/openai_upstream.py, run with /usr/bin/python3) and the
// daemon ($GPUPROXYD_BIN, default build/gpuproxyd) with a temporary config on free ports, the same
// conventions as tests/integration/harness.py. Without the binary every test is skipped.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const FAKE = path.join(REPO, 'tests', 'fakes', 'openai_upstream.py');
const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const BIN = path.resolve(REPO, process.env.GPUPROXYD_BIN || 'build/gpuproxyd');
const HOST = '127.0.0.1';
const OPENROUTER_KEY = 'sk-or-v1-e2e-KEY-9d8c7b6a';
const SANITIZER_MARKERS = ['AddressSanitizer', 'LeakSanitizer', 'runtime error:'];
const DAEMON_ENV_VARS = [
  'GPUPROXYD_LISTEN', 'GPUPROXYD_STORE', 'GPUPROXYD_CA_FILE', 'OPENROUTER_API_KEY',
  'OPENROUTER_BASE_URL', 'PORT_OPENROUTER_MIN', 'PORT_OPENROUTER_MAX', 'PORT_CUSTOM_MIN',
  'PORT_CUSTOM_MAX', 'JWT_ENABLED', 'JWT_SECRET',
];

function skipReason() {
  try {
    fs.accessSync(BIN, fs.constants.X_OK);
    if (!fs.statSync(BIN).isFile()) throw new Error('not a file');
  } catch {
    return `gpuproxyd binary not found at ${BIN}: build it with \`make\`, or set GPUPROXYD_BIN`;
  }
  return false;
}

let OpenAI = null;
let sdkMissing = false;
try {
  ({ default: OpenAI } = await import('openai'));
} catch {
  sdkMissing = 'the openai package is not installed: run `npm ci` in tests/e2e';
}
const SKIP = sdkMissing || skipReason();
if (SKIP) console.log(`# SKIP gpuproxyd SDK tests: ${SKIP}`);

// ---------------------------------------------------------------------------------------------
// ports

function canBind(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: HOST, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ port: 0, host: HOST }, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function ephemeralLow() {
  try {
    return Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}

const usedRanges = [];
async function pickRange(size) {
  const top = Math.min(40000, ephemeralLow()) - size - 1;
  for (let attempt = 0; attempt < 200; attempt++) {
    const lo = 20000 + Math.floor(Math.random() * (top - 20000));
    const hi = lo + size - 1;
    if (usedRanges.some(([a, b]) => !(hi < a || lo > b))) continue;
    let ok = true;
    for (let p = lo; p <= hi && ok; p++) ok = await canBind(p);
    if (ok) {
      usedRanges.push([lo, hi]);
      return [lo, hi];
    }
  }
  throw new Error(`no ${size} free ports in a row`);
}

// ---------------------------------------------------------------------------------------------
// processes

function startFake() {
  return new Promise((resolve, reject) => {
    const proc = spawn(PYTHON, [FAKE, '--port', '0', '--host', HOST, '--exit-with-parent'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const timer = setTimeout(() => reject(new Error('fake upstream did not print READY')), 10000);
    const rl = createInterface({ input: proc.stdout });
    rl.once('line', (line) => {
      clearTimeout(timer);
      const m = /^READY (\d+)/.exec(line);
      if (!m) return reject(new Error(`unexpected fake output: ${line}`));
      const port = Number(m[1]);
      const control = async (method, p, body) => {
        const r = await fetch(`http://${HOST}:${port}${p}`, {
          method, body: body === undefined ? undefined : JSON.stringify(body),
          headers: { 'content-type': 'application/json', connection: 'close' },
        });
        if (r.status !== 200) throw new Error(`fake control ${p}: ${r.status}`);
        return r.json();
      };
      resolve({
        proc, port,
        url: (prefix = '/v1') => `http://${HOST}:${port}${prefix}`,
        configure: (behavior = {}) => control('POST', '/_fake/config', behavior),
        reset: async () => { await control('POST', '/_fake/config', {}); await control('POST', '/_fake/clear', {}); },
        stats: () => control('GET', '/_fake/stats'),
        requests: () => control('GET', '/_fake/requests'),
      });
    });
    proc.once('exit', (code) => reject(new Error(`fake upstream exited with ${code}`)));
  });
}

function tomlValue(v) {
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  throw new Error(`no TOML for ${v}`);
}

function renderConfig({ listen, server, ports, openrouterBaseUrl, models }) {
  const out = ['# written by tests/e2e/sdk.test.mjs', '[server]', `listen = ${tomlValue(listen)}`];
  for (const [k, v] of Object.entries(server)) out.push(`${k} = ${tomlValue(v)}`);
  out.push('', '[ports]');
  for (const [k, v] of Object.entries(ports)) out.push(`${k} = ${tomlValue(v)}`);
  out.push('', '[providers.openrouter]', `base_url = ${tomlValue(openrouterBaseUrl)}`, '');
  for (const m of models) {
    out.push('[[models]]');
    for (const [k, v] of Object.entries(m)) out.push(`${k} = ${tomlValue(v)}`);
    out.push('');
  }
  return out.join('\n') + '\n';
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitReady(port, proc, stderrPath, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  let last = null;
  while (Date.now() < end) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`gpuproxyd exited (${proc.exitCode ?? proc.signalCode}) during start-up:\n${readTail(stderrPath)}`);
    }
    try {
      const r = await fetch(`http://${HOST}:${port}/readyz`, { headers: { connection: 'close' } });
      await r.arrayBuffer();
      if (r.status === 200) return;
      last = r.status;
    } catch (e) {
      last = e.message;
    }
    await sleep(50);
  }
  throw new Error(`gpuproxyd not ready within ${timeoutMs} ms (last: ${last}):\n${readTail(stderrPath)}`);
}

function readTail(p, n = 4000) {
  try {
    const t = fs.readFileSync(p, 'utf8');
    return t.slice(-n);
  } catch {
    return '';
  }
}

function waitExit(proc, timeoutMs) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(proc.exitCode ?? proc.signalCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), timeoutMs);
    proc.once('exit', (code, sig) => { clearTimeout(timer); resolve(code ?? sig); });
  });
}

// ---------------------------------------------------------------------------------------------
// the suite

describe('gpuproxyd through the openai SDK', { skip: SKIP }, () => {
  const ctx = {};

  before(async () => {
    ctx.fake = await startFake();
    ctx.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gpuproxyd-e2e-'));
    ctx.port = await freePort();
    ctx.custom = await pickRange(40);
    ctx.hosted = await pickRange(20);
    ctx.ports = {
      echo: ctx.custom[0],
      dead: ctx.custom[0] + 1,
      hosted: ctx.hosted[0],
    };
    const dead = await freePort();
    const config = renderConfig({
      listen: `${HOST}:${ctx.port}`,
      server: {
        workers: 2, max_body: '64KB', header_timeout: '2s', upstream_timeout: '5s',
        drain_timeout: '5s', access_log: true,
      },
      ports: {
        openrouter_min: ctx.hosted[0], openrouter_max: ctx.hosted[1],
        custom_min: ctx.custom[0], custom_max: ctx.custom[1],
      },
      openrouterBaseUrl: ctx.fake.url('/api/v1'),
      models: [
        { name: 'echo', upstream_url: ctx.fake.url('/v1'), port: ctx.ports.echo,
          prompt_usd_per_mtok: 1.0, completion_usd_per_mtok: 2.0 },
        { name: 'dead', upstream_url: `http://${HOST}:${dead}/v1`, port: ctx.ports.dead },
        { name: 'hosted', provider: 'openrouter', upstream_model: 'anthropic/claude-3-opus',
          port: ctx.ports.hosted },
      ],
    });
    ctx.configPath = path.join(ctx.tmp, 'gpuproxyd.toml');
    fs.writeFileSync(ctx.configPath, config);
    ctx.stderrPath = path.join(ctx.tmp, 'stderr.log');
    const env = { ...process.env };
    for (const k of DAEMON_ENV_VARS) delete env[k];
    Object.assign(env, {
      GPUPROXYD_LISTEN: `${HOST}:${ctx.port}`,
      GPUPROXYD_STORE: `sqlite:${path.join(ctx.tmp, 'store.db')}`,
      PORT_OPENROUTER_MIN: String(ctx.hosted[0]), PORT_OPENROUTER_MAX: String(ctx.hosted[1]),
      PORT_CUSTOM_MIN: String(ctx.custom[0]), PORT_CUSTOM_MAX: String(ctx.custom[1]),
      OPENROUTER_API_KEY: OPENROUTER_KEY,
      OPENROUTER_BASE_URL: ctx.fake.url('/api/v1'),
    });
    const errFd = fs.openSync(ctx.stderrPath, 'a');
    ctx.daemon = spawn(BIN, ['--config', ctx.configPath], { cwd: ctx.tmp, env, stdio: ['ignore', 'ignore', errFd] });
    fs.closeSync(errFd);
    await waitReady(ctx.port, ctx.daemon, ctx.stderrPath);
    ctx.client = new OpenAI({ baseURL: `http://${HOST}:${ctx.port}/v1`, apiKey: 'x', maxRetries: 0, timeout: 10000 });
    ctx.portClient = (port) => new OpenAI({ baseURL: `http://${HOST}:${port}/v1`, apiKey: 'x', maxRetries: 0, timeout: 10000 });
  });

  after(async () => {
    let problem = null;
    if (ctx.daemon) {
      if (ctx.daemon.exitCode === null && ctx.daemon.signalCode === null) {
        ctx.daemon.kill('SIGTERM');
        const code = await waitExit(ctx.daemon, 10000);
        if (code === null) {
          ctx.daemon.kill('SIGKILL');
          problem = 'gpuproxyd did not exit within 10 s of SIGTERM';
        } else if (code !== 0) {
          problem = `gpuproxyd exited with ${code}`;
        }
      }
      const err = readTail(ctx.stderrPath, 1 << 30);
      for (const m of SANITIZER_MARKERS) if (err.includes(m)) problem = `sanitizer report on stderr (${m})`;
      if (err.includes(OPENROUTER_KEY)) problem = 'the OpenRouter key appeared on stderr';
      if (problem) problem += `\n${readTail(ctx.stderrPath)}`;
    }
    if (ctx.fake) {
      ctx.fake.proc.kill('SIGTERM');
      await waitExit(ctx.fake.proc, 5000);
    }
    if (ctx.tmp && !process.env.GPUPROXYD_KEEP_TMP) fs.rmSync(ctx.tmp, { recursive: true, force: true });
    if (problem) assert.fail(problem);
  });

  test('chat.completions.create on the main port', async () => {
    await ctx.fake.reset();
    const r = await ctx.client.chat.completions.create({
      model: 'echo', messages: [{ role: 'user', content: 'hello from the sdk' }],
    });
    assert.equal(r.choices[0].message.content, 'echo: hello from the sdk');
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.deepEqual(r.usage, { prompt_tokens: 4, completion_tokens: 5, total_tokens: 9 });
    const reqs = (await ctx.fake.requests()).filter((q) => q.path.endsWith('/chat/completions'));
    assert.equal(reqs.length, 1);
    assert.equal(reqs[0].path, '/v1/chat/completions');
  });

  test('streaming chat with for await', async () => {
    const stream = await ctx.client.chat.completions.create({
      model: 'echo', stream: true, stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'stream these words please' }],
    });
    let text = '';
    let usage = null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      assert.equal(chunk.object, 'chat.completion.chunk');
      for (const c of chunk.choices) text += c.delta?.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, 'echo: stream these words please');
    assert.ok(chunks >= 2, `only ${chunks} chunk(s)`);
    assert.ok(usage, 'no usage chunk');
    assert.equal(usage.completion_tokens, 5);
  });

  test('streaming arrives incrementally', async () => {
    await ctx.fake.configure({ chunk_delay_ms: 300, stream_chunks: 5 });
    try {
      const t0 = Date.now();
      const stream = await ctx.client.chat.completions.create({
        model: 'echo', stream: true, messages: [{ role: 'user', content: 'slow drip' }],
      });
      const times = [];
      for await (const chunk of stream) { if (chunk.choices.length) times.push(Date.now() - t0); }
      assert.equal(times.length, 5);
      assert.ok(times[0] < 1000, `first chunk after ${times[0]} ms`);
      assert.ok(times[4] - times[0] >= 4 * 300 - 50, `chunks were bunched: ${times}`);
    } finally {
      await ctx.fake.configure({});
    }
  });

  test('aborting a stream closes the upstream stream', async () => {
    await ctx.fake.reset();
    await ctx.fake.configure({ chunk_delay_ms: 300, stream_chunks: 20 });
    try {
      const stream = await ctx.client.chat.completions.create({
        model: 'echo', stream: true, messages: [{ role: 'user', content: 'abandon' }],
      });
      for await (const chunk of stream) { if (chunk) break; } // leaving the loop aborts
      let st = null;
      const end = Date.now() + 2000;
      while (Date.now() < end) {
        st = await ctx.fake.stats();
        if (st.stream_aborted === 1) break;
        await sleep(50);
      }
      assert.equal(st.stream_aborted, 1, `upstream stream not closed: ${JSON.stringify(st)}`);
    } finally {
      await ctx.fake.configure({});
    }
  });

  test('completions.create', async () => {
    const r = await ctx.client.completions.create({ model: 'echo', prompt: 'complete me' });
    assert.equal(r.choices[0].text, 'echo: complete me');
    assert.equal(r.usage.prompt_tokens, 2);
  });

  test('embeddings.create (SDK default base64, and float)', async () => {
    const r = await ctx.client.embeddings.create({ model: 'echo', input: 'embed this' });
    assert.equal(r.data.length, 1);
    const v = Array.from(r.data[0].embedding);
    assert.equal(v.length, 3);
    [0.1, 0.2, 0.3].forEach((x, i) => assert.ok(Math.abs(v[i] - x) < 1e-6, `embedding ${v}`));
    const f = await ctx.client.embeddings.create({ model: 'echo', input: 'embed this', encoding_format: 'float' });
    assert.deepEqual(f.data[0].embedding, [0.1, 0.2, 0.3]);
  });

  test('models.list on the main port', async () => {
    const ids = [];
    for await (const m of ctx.client.models.list()) ids.push(m.id);
    for (const name of ['echo', 'dead', 'hosted']) assert.ok(ids.includes(name), `${name} missing from ${ids}`);
  });

  test('a client on a model port', async () => {
    const c = ctx.portClient(ctx.ports.echo);
    const r = await c.chat.completions.create({ model: 'anything', messages: [{ role: 'user', content: 'by port' }] });
    assert.equal(r.choices[0].message.content, 'echo: by port');
    const ids = [];
    for await (const m of c.models.list()) ids.push(m.id);
    assert.deepEqual(ids, ['echo']);
    const stream = await c.chat.completions.create({ model: 'anything', stream: true, messages: [{ role: 'user', content: 'port stream' }] });
    let text = '';
    for await (const chunk of stream) for (const ch of chunk.choices) text += ch.delta?.content ?? '';
    assert.equal(text, 'echo: port stream');
  });

  test('a hosted (OpenRouter) model through the SDK', async () => {
    await ctx.fake.reset();
    const r = await ctx.portClient(ctx.ports.hosted).chat.completions.create({
      model: 'ignored', messages: [{ role: 'user', content: 'to the hosted tier' }],
    });
    assert.equal(r.choices[0].message.content, 'echo: to the hosted tier');
    const reqs = (await ctx.fake.requests()).filter((q) => q.path.endsWith('/chat/completions'));
    assert.equal(reqs.length, 1);
    assert.equal(reqs[0].path, '/api/v1/chat/completions');
    assert.equal(JSON.parse(reqs[0].body).model, 'anthropic/claude-3-opus');
    assert.equal(reqs[0].headers.authorization, `Bearer ${OPENROUTER_KEY}`);
  });

  test('unknown model => NotFoundError', async () => {
    await assert.rejects(
      ctx.client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
      (e) => {
        assert.ok(e instanceof OpenAI.NotFoundError, `got ${e?.constructor?.name}: ${e?.message}`);
        assert.equal(e.status, 404);
        assert.equal(e.code, 'model_not_found');
        return true;
      });
  });

  test('invalid JSON => BadRequestError', async () => {
    await assert.rejects(
      ctx.client.post('/chat/completions', { body: Buffer.from('{"model": "echo", "messages": [') }),
      (e) => {
        assert.ok(e instanceof OpenAI.BadRequestError, `got ${e?.constructor?.name}: ${e?.message}`);
        assert.equal(e.status, 400);
        assert.equal(e.type, 'invalid_request_error');
        return true;
      });
  });

  test('body over max_body on a model port => APIError 413', async () => {
    const c = ctx.portClient(ctx.ports.echo);
    await assert.rejects(
      c.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'z'.repeat(100 * 1024) }] }),
      (e) => {
        assert.ok(e instanceof OpenAI.APIError, `got ${e?.constructor?.name}: ${e?.message}`);
        assert.equal(e.status, 413, `status ${e.status}: ${e.message}`);
        return true;
      });
  });

  test('upstream down => InternalServerError 502', async () => {
    await assert.rejects(
      ctx.client.chat.completions.create({ model: 'dead', messages: [{ role: 'user', content: 'x' }] }),
      (e) => {
        assert.ok(e instanceof OpenAI.InternalServerError, `got ${e?.constructor?.name}: ${e?.message}`);
        assert.equal(e.status, 502);
        return true;
      });
  });

  test('upstream 500 relayed => InternalServerError with the upstream message', async () => {
    await ctx.fake.configure({ status: 500 });
    try {
      await assert.rejects(
        ctx.client.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'x' }] }),
        (e) => {
          assert.ok(e instanceof OpenAI.InternalServerError, `got ${e?.constructor?.name}`);
          assert.equal(e.status, 500);
          assert.match(e.message, /fake failure/);
          return true;
        });
    } finally {
      await ctx.fake.configure({});
    }
  });
});
