// Browser tests of the web UI against the real daemon (`car-runtime run
// --sim`), started by scripts/suites/browser.sh, which passes:
//   BASE_URL       http://127.0.0.1:PORT
//   CAR_PASSWORD   from the daemon's initial-password file
//   GOOD_MODEL     a folder with model.onnx + model_metadata.json
//   CAL_FILE       the calibration file the daemon saves to
//   SHOTS          where screenshots go
//   TAIL_DIR       the fake pwmchip folder the tail light is on (its pwm2,
//                  pwm3, pwm4 = red, green, blue); without it the duty-cycle
//                  check is skipped
// Phone and tablet viewports with touch, each in a fresh Chromium profile.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, devices } from 'playwright-core';

const BASE = process.env.BASE_URL;
const PASSWORD = process.env.CAR_PASSWORD;
const GOOD = process.env.GOOD_MODEL;
const SHOTS = process.env.SHOTS || path.join(import.meta.dirname, 'screenshots');
fs.mkdirSync(SHOTS, { recursive: true });

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];

function device(name, landscape) {
  const d = { ...devices[name] };
  delete d.defaultBrowserType;
  if (landscape) d.viewport = { width: d.viewport.height, height: d.viewport.width };
  return d;
}

async function open(dev) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'car-ui-profile-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: ARGS, ...dev,
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  page.setDefaultTimeout(15000);
  return { ctx, page, dir };
}

const status = (page) => page.evaluate(() => fetch('/api/status').then((r) => r.json()));
async function until(page, what, pred, ms = 8000) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < ms) {
    last = await status(page);
    if (pred(last)) return last;
    await page.waitForTimeout(100);
  }
  assert.fail(`${what}: status stayed ${JSON.stringify(last)}`);
}

async function login(page) {
  await page.goto(BASE + '/drive');
  await page.waitForURL(/\/login/);
  await page.locator('#login-password').fill('wrong-password');
  await page.locator('#login-form button[type=submit]').tap();
  await page.locator('#login-error').filter({ hasText: 'wrong password' }).waitFor();
  await page.locator('#login-password').fill(PASSWORD);
  await page.locator('#login-form button[type=submit]').tap();
  await page.waitForURL(/\/drive$/);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, name + '.png') });
}

async function driveFlow(page, tag, fresh) {
  // Camera frames arrive and are drawn.
  await page.waitForFunction(() => (window.__cameraFrames || 0) >= 5, null, { timeout: 20000 });
  const seqA = await page.evaluate(() => window.__cameraSeq);
  await page.waitForTimeout(500);
  const seqB = await page.evaluate(() => window.__cameraSeq);
  assert.ok(seqB > seqA, `camera frames keep arriving (${seqA} -> ${seqB})`);
  await page.locator('#st-fps').filter({ hasText: /^[1-9]/ }).waitFor();

  const s0 = await status(page);
  // A freshly started daemon is at 0 %; the second device sees what the
  // first one set, and its slider must show the car's value, not a default.
  if (fresh) assert.equal(s0.max_speed_pct, 0, 'max speed starts at 0 %');
  assert.equal(await page.locator('#max-speed').inputValue(), String(Math.round(s0.max_speed_pct)));
  const want = fresh ? 30 : 40;
  await page.locator('#max-speed').fill(String(want));
  await until(page, 'max speed ' + want, (s) => Math.round(s.max_speed_pct) === want);

  // Start autonomous, stop.
  await page.locator('#mode-auto').tap();
  await page.locator('#btn-start').tap();
  await until(page, 'autonomous', (s) => s.mode === 'autonomous');
  await page.waitForTimeout(600);
  await shot(page, `${tag}-drive`);
  await page.locator('#btn-stop').tap();
  await until(page, 'stopped', (s) => s.mode === 'stopped');

  // Emergency stop latches; Start is refused until reset.
  await page.locator('#btn-start').tap();
  await until(page, 'autonomous again', (s) => s.mode === 'autonomous');
  await page.locator('#estop').tap();
  await until(page, 'e-stop', (s) => s.estop && s.mode === 'stopped');
  await page.locator('#estop-banner').waitFor({ state: 'visible' });
  assert.ok(await page.locator('#btn-start').isDisabled(), 'Start disabled while e-stopped');
  const refused = await page.evaluate((csrf) => fetch('/api/command', {
    method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
    body: JSON.stringify({ cmd: 'set_mode', mode: 'autonomous' }),
  }).then((r) => r.status), await page.evaluate(() => window.__session.csrf));
  assert.ok(refused >= 400, 'the car refuses to start while e-stopped');
  await shot(page, `${tag}-estop`);
  await page.locator('#estop-reset').tap();
  await until(page, 'e-stop reset', (s) => !s.estop && s.mode === 'stopped');

  // Manual: drag the joystick forward; the car gets throttle; release -> 0.
  await page.locator('#mode-manual').tap();
  await page.locator('#btn-start').tap();
  await until(page, 'manual', (s) => s.mode === 'manual');
  // The page enables the pad once its own status poll sees manual mode.
  await page.locator('#joy-wrap:not(.disabled) #joystick').waitFor();
  await page.locator('#joystick').scrollIntoViewIfNeeded();
  const box = await page.locator('#joystick').boundingBox();
  const cx = box.x + box.width / 2, cy = box.y + box.height / 2;
  await page.mouse.move(cx, cy);
  await page.mouse.down();
  await page.mouse.move(cx - box.width * 0.2, cy - box.height * 0.4, { steps: 4 });
  const s = Number(await page.locator('#joy-s').textContent());
  const th = Number(await page.locator('#joy-t').textContent());
  assert.ok(th > 0.5 && s > 0.2 && s < 0.6, `continuous joystick values (s=${s}, t=${th})`);
  await page.waitForTimeout(400);
  const ws = await page.evaluate(() => new Promise((res) => {
    const w = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws/telemetry');
    w.onmessage = (e) => { res(JSON.parse(e.data)); w.close(); };
  }));
  const driven = ws.samples.filter((x) => x.throttle !== 0);
  assert.ok(driven.length > 0, 'manual throttle reached the wire: ' + JSON.stringify(ws.samples.slice(-3)));
  await page.mouse.up();
  await page.locator('#btn-stop').tap();
  await until(page, 'stopped after manual', (st) => st.mode === 'stopped');
}

async function calibrateFlow(page, tag) {
  await page.goto(BASE + '/calibrate');
  const before = await page.evaluate(() => fetch('/api/calibration').then((r) => r.json()));
  await page.locator('#cal-current').filter({ hasText: 'µs' }).waitFor();
  await shot(page, `${tag}-calibrate`);
  const next = page.locator('#cal-next');
  const nudge = (n) => page.locator(`[data-nudge="${n}"]`).tap();
  const val = async () => Number(await page.locator('#cal-value').textContent());
  await next.tap(); // Begin: calibration mode
  await until(page, 'calibration mode', (s) => s.mode === 'calibration');
  await page.locator('#cal-title').filter({ hasText: 'Steering centre' }).waitFor();
  const mid0 = await val();
  assert.equal(mid0, before.live.steering.mid / 1000, 'values shown in microseconds');
  await nudge(10); await nudge(10); await nudge(1);
  assert.equal(await val(), mid0 + 21);
  await shot(page, `${tag}-calibrate-wizard`);
  await next.tap();
  await page.locator('#cal-title').filter({ hasText: 'Full left' }).waitFor();
  const left0 = await val();
  await nudge(10);
  await page.locator('#cal-slider').fill(String(left0 + 30));
  assert.equal(await val(), left0 + 30, 'fine slider sets the value');
  await next.tap();
  await page.locator('#cal-title').filter({ hasText: 'Full right' }).waitFor();
  const right0 = await val();
  await nudge(-10);
  await next.tap();
  await page.locator('#cal-title').filter({ hasText: 'Check steering' }).waitFor();
  await page.locator('#cal-yes').tap();
  await page.locator('#cal-title').filter({ hasText: 'Throttle neutral' }).waitFor();
  const tmid = await val();
  await next.tap();
  await page.locator('#cal-title').filter({ hasText: 'Forward' }).waitFor();
  const fwd0 = await val();
  await nudge(fwd0 < tmid ? 10 : -10); // a little slower
  await next.tap();
  await page.locator('#cal-title').filter({ hasText: 'Reverse' }).waitFor();
  await next.tap();
  await page.locator('#cal-title').filter({ hasText: 'Check throttle' }).waitFor();
  const test = page.locator('#cal-test');
  const tb = await test.boundingBox();
  await page.mouse.move(tb.x + tb.width / 2, tb.y + tb.height / 2);
  await page.mouse.down();
  await page.waitForTimeout(400);
  await page.mouse.up();
  assert.equal(await page.locator('#cal-msg').textContent(), '', 'test pulses accepted');
  await page.locator('#cal-yes').tap();
  await page.locator('#cal-title').filter({ hasText: 'Review' }).waitFor();
  await page.locator('#cal-save').tap();
  await page.locator('#cal-msg').filter({ hasText: 'Saved' }).waitFor();
  const after = await page.evaluate(() => fetch('/api/calibration').then((r) => r.json()));
  const st = after.saved.steering, th = after.saved.throttle;
  assert.equal(st.mid, (mid0 + 21) * 1000);
  const leftNs = (left0 + 30) * 1000, rightNs = (right0 - 10) * 1000;
  assert.equal(st.polarity > 0 ? st.max : st.min, leftNs, 'full left saved');
  assert.equal(st.polarity > 0 ? st.min : st.max, rightNs, 'full right saved');
  assert.equal(th.mid, tmid * 1000);
  assert.deepEqual(after.live, after.saved);
  await until(page, 'stopped after calibration', (s) => s.mode === 'stopped');
  if (process.env.CAL_FILE) {
    const f = JSON.parse(fs.readFileSync(process.env.CAL_FILE, 'utf8'));
    assert.ok(JSON.stringify(f).includes(String(st.mid)), 'calibration file holds the saved centre: ' + JSON.stringify(f));
  }
}

async function modelsFlow(page, tag) {
  await page.goto(BASE + '/models');
  const good = `good-${tag}`;
  await page.locator('#upload-files').setInputFiles([path.join(GOOD, 'model.onnx'), path.join(GOOD, 'model_metadata.json')]);
  await page.locator('#upload-name').fill(good);
  await page.locator('#upload-form button[type=submit]').tap();
  await page.locator('#upload-result').filter({ hasText: 'OK: installed' }).waitFor({ timeout: 30000 });
  const row = page.locator(`#model-list li[data-name="${good}"]`);
  await row.locator('button', { hasText: 'Load' }).tap();
  await page.locator('#model-status').filter({ hasText: 'Driving with: ' + good }).waitFor({ timeout: 30000 });

  // A bad model: metadata with the wrong number of actions for the network
  // (three discrete actions; the good model has two continuous outputs, or
  // more than three discrete ones).
  const badDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bad-model-'));
  const meta = JSON.parse(fs.readFileSync(path.join(GOOD, 'model_metadata.json'), 'utf8'));
  meta.action_space = [-30, 0, 30].map((a) => ({ steering_angle: a, speed: 1 }));
  meta.action_space_type = 'discrete';
  fs.writeFileSync(path.join(badDir, 'model_metadata.json'), JSON.stringify(meta));
  fs.copyFileSync(path.join(GOOD, 'model.onnx'), path.join(badDir, 'model.onnx'));
  await page.locator('#upload-files').setInputFiles([path.join(badDir, 'model.onnx'), path.join(badDir, 'model_metadata.json')]);
  await page.locator('#upload-name').fill(`bad-${tag}`);
  await page.locator('#upload-form button[type=submit]').tap();
  const err = page.locator('#upload-result.error');
  await err.waitFor({ timeout: 30000 });
  const text = await err.textContent();
  assert.match(text, /^Rejected: /);
  assert.match(text, /model_metadata\.json|action/i, 'the exact error names the file or field: ' + text);
  await shot(page, `${tag}-models`);
  assert.equal(await page.locator(`#model-list li[data-name="bad-${tag}"]`).count(), 0, 'bad model not installed');
  const s = await status(page);
  assert.ok(s.model.active.endsWith('/' + good), 'the old model still drives: ' + JSON.stringify(s.model));
}

async function raceFlow(page, tag) {
  await page.goto(BASE + '/race');
  // A fresh car shows a full 4:00; after an earlier race ended it shows that
  // race's result (0:00.0) until Start begins a new one.
  await page.locator('#race-remaining').filter({ hasText: /^(4:00\.0|0:00\.0)$/ }).waitFor();
  await page.locator('#race-start').filter({ hasText: 'Start race' }).waitFor();
  await page.locator('#race-start').tap();
  await page.locator('#race-remaining').filter({ hasText: /^(4:00\.0|3:5\d\.\d)$/ }).waitFor();
  await page.locator('#race-laps li').first().waitFor({ state: 'detached' }).catch(() => {});
  assert.equal(await page.locator('#race-laps li').count(), 0, 'a new race starts with no laps');
  await page.waitForTimeout(300);
  await page.locator('#race-lap').tap();
  await page.waitForTimeout(500);
  await page.locator('#race-lap').tap();
  for (let i = 0; i < 3; i++) await page.locator('#race-off').tap();
  await page.locator('#race-laps li.dnf').waitFor();
  assert.equal(await page.locator('#race-laps li').count(), 3);
  assert.equal(await page.locator('#race-laps li.best').count(), 1);
  assert.equal(await page.locator('#race-off-count').textContent(), '0', 'strikes reset after the DNF');
  await shot(page, `${tag}-race`);
  await page.locator('#race-end').tap();
  await page.locator('#race-history li').first().waitFor();
}

// The daemon maps each 0-255 level linearly onto 0..10,000,000 ns of high
// time, rounded down.
const tailNs = (level) => Math.floor((level * 10000000) / 255);
const TAIL_DIR = process.env.TAIL_DIR;

async function tailLightFlow(page, tag, t) {
  await page.goto(BASE + '/settings');
  const before = await page.evaluate(() => fetch('/api/tail-light').then((r) => r.json()));
  assert.equal(before.available, true, 'the simulated car has a tail light: ' + JSON.stringify(before));
  const card = page.locator('#tail-card');
  await card.waitFor({ state: 'visible' });
  const hex = (c) => '#' + [c.r, c.g, c.b].map((v) => v.toString(16).padStart(2, '0')).join('');
  // The input shows the car's colour once the page has asked for it.
  await page.waitForFunction((want) => document.getElementById('tail-colour').value === want, hex(before.colour));
  await page.locator('#tail-colour').fill('#ff8000');
  await page.locator('#tail-save').tap();
  await page.locator('#tail-status.ok').filter({ hasText: 'Saved' }).waitFor();
  await card.scrollIntoViewIfNeeded();
  await shot(page, `${tag}-tail-light`);
  const after = await page.evaluate(() => fetch('/api/tail-light').then((r) => r.json()));
  assert.deepEqual(after, { available: true, colour: { r: 255, g: 128, b: 0 } });
  // A fresh load shows the saved colour, not the input's default.
  await page.reload();
  await card.waitFor({ state: 'visible' });
  await page.waitForFunction(() => document.getElementById('tail-colour').value === '#ff8000');

  await t.test('tail light duty cycles on the fake pwmchip', {
    skip: TAIL_DIR ? false : 'TAIL_DIR is not set: cannot read the tail light\'s PWM duty cycles (scripts/suites/browser.sh exports it)',
  }, async () => {
    const want = { pwm2: tailNs(255), pwm3: tailNs(128), pwm4: tailNs(0) };
    assert.deepEqual(want, { pwm2: 10000000, pwm3: 5019607, pwm4: 0 });
    const read = () => Object.fromEntries(Object.keys(want).map((ch) => {
      const f = path.join(TAIL_DIR, ch, 'duty_cycle');
      let v;
      try { v = Number(fs.readFileSync(f, 'utf8').trim()); } catch (e) { v = String(e.code || e); }
      return [ch, v];
    }));
    // The POST answers once the colour is shown; allow a moment anyway.
    let got = read();
    for (let i = 0; i < 30 && JSON.stringify(got) !== JSON.stringify(want); i++) {
      await page.waitForTimeout(100);
      got = read();
    }
    assert.deepEqual(got, want, `duty_cycle files under ${TAIL_DIR} (red, green, blue)`);
  });
}

async function settingsShot(page, tag) {
  await page.goto(BASE + '/settings');
  await page.locator('#settings-info').filter({ hasText: /HTTP/ }).waitFor();
  await shot(page, `${tag}-settings`);
  await page.locator('#logout').tap();
  await page.waitForURL(/\/login/);
  const r = await page.evaluate(() => fetch('/api/status').then((x) => x.status));
  assert.equal(r, 401, 'logged out');
  await shot(page, `${tag}-login`);
}

let firstDevice = true;
for (const [tag, dev] of [['iphone-se', device('iPhone SE')], ['ipad-pro-landscape', device('iPad Pro 11', true)]]) {
  test(`web UI on ${tag}`, { timeout: 180000 }, async (t) => {
    assert.ok(BASE && PASSWORD && GOOD, 'BASE_URL, CAR_PASSWORD and GOOD_MODEL must be set (run scripts/suites/browser.sh)');
    const { ctx, page, dir } = await open(dev);
    try {
      await t.test('log in', () => login(page));
      await t.test('drive: camera, max speed, start, stop, e-stop, manual', () => { const fresh = firstDevice; firstDevice = false; return driveFlow(page, tag, fresh); });
      await t.test('calibration wizard end to end', () => calibrateFlow(page, tag));
      await t.test('models: good upload loads, bad upload shows its error, old model stays', () => modelsFlow(page, tag));
      await t.test('race timing', () => raceFlow(page, tag));
      await t.test('settings: tail-light colour', (st) => tailLightFlow(page, tag, st));
      await t.test('settings and logout', () => settingsShot(page, tag));
    } finally {
      await ctx.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
