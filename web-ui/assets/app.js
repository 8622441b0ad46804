// Car control panel. Vanilla JS, no build step, no CDN.
// One shell for every page; the path picks the page.
'use strict';

const $ = (id) => document.getElementById(id);
const page = (location.pathname.replace(/^\//, '') || 'drive').split('/')[0];
let csrf = '';
let status = null;

// ---------- HTTP helpers ----------
async function api(method, path, body, raw, timeoutMs) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  // A request stuck on a dead link must not hold up a retry.
  if (timeoutMs) opts.signal = AbortSignal.timeout(timeoutMs);
  if (method !== 'GET') opts.headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) {
    if (raw) { opts.body = body; opts.headers['Content-Type'] = 'application/octet-stream'; }
    else { opts.body = JSON.stringify(body); opts.headers['Content-Type'] = 'application/json'; }
  }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (_) { data = null; }
  if (r.status === 401 && page !== 'login') {
    location.href = '/login?next=' + encodeURIComponent(location.pathname);
    throw new Error('log in first');
  }
  if (!r.ok) throw new Error((data && data.error) || ('HTTP ' + r.status));
  return data;
}
const command = (cmd) => api('POST', '/api/command', cmd);

// ---------- e-stop ----------
// Sent again and again until the car itself reports the latch (the answer
// to the request or the telemetry), never given up on; while unconfirmed a
// red banner says so, with the reason, so the user knows to act otherwise.
let estopWanted = false;
const estopConfirmed = (s) => !!(s && s.estop);
function estopDone() {
  estopWanted = false;
  show($('estop-error'), false);
  window.__estopState = 'confirmed';
}
async function pressEstop() {
  if (estopWanted) return;
  estopWanted = true;
  window.__estopState = 'sending';
  window.__estopAttempts = 0;
  const t0 = Date.now();
  while (estopWanted) {
    window.__estopAttempts++;
    let why = '';
    try {
      const s = await api('POST', '/api/command', { cmd: 'e_stop' }, undefined, 1500);
      if (estopConfirmed(s)) { status = s; renderStatus(s); estopDone(); return; }
      why = 'sent, not latched yet';
    } catch (e) {
      why = (e && e.name === 'TimeoutError') ? 'no answer from the car' : (e && e.message) || 'network error';
    }
    if (!estopWanted) return;
    // The loop applies the latch at its next frame (tens of ms): only warn
    // when it takes longer than a human would wait or a request failed.
    if (why !== 'sent, not latched yet' || Date.now() - t0 > 1000) {
      window.__estopState = 'unconfirmed';
      $('estop-error').textContent = 'E-STOP NOT CONFIRMED (' + why + '): retrying…';
      show($('estop-error'), true);
    }
    await new Promise((r) => setTimeout(r, window.__estopAttempts < 10 ? 100 : 300));
  }
}

function wsUrl(path) {
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + path;
}
function show(el, on) { el.hidden = !on; }
function setMsg(el, text, cls) { el.textContent = text || ''; el.className = 'msg ' + (cls || ''); }
function fmtMs(ms) {
  const m = Math.floor(ms / 60000), s = (ms % 60000) / 1000;
  return m + ':' + s.toFixed(1).padStart(4, '0');
}
function fmtLap(ms) { return (ms / 1000).toFixed(3) + ' s'; }

// ---------- status (telemetry WebSocket) ----------
const statusListeners = [];
statusListeners.push((s) => { if (estopWanted && estopConfirmed(s)) estopDone(); });
let telemetryWs = null, telemetryBackoff = 500, lastTelemetry = 0;
function connectTelemetry() {
  telemetryWs = new WebSocket(wsUrl('/ws/telemetry'));
  telemetryWs.onmessage = (e) => {
    lastTelemetry = Date.now();
    telemetryBackoff = 500;
    show($('conn-banner'), false);
    const m = JSON.parse(e.data);
    status = m.status;
    renderStatus(m.status);
    statusListeners.forEach((f) => f(m.status, m.samples));
  };
  telemetryWs.onclose = () => {
    show($('conn-banner'), true);
    setTimeout(connectTelemetry, telemetryBackoff);
    telemetryBackoff = Math.min(telemetryBackoff * 2, 4000);
  };
}
setInterval(() => {
  if (lastTelemetry && Date.now() - lastTelemetry > 2000) show($('conn-banner'), true);
}, 1000);

function renderStatus(s) {
  $('st-mode').textContent = s.estop ? 'E-STOP' : s.mode;
  $('st-fps').textContent = s.fps.toFixed(0);
  $('st-lat').textContent = s.latency_p99_ms.toFixed(1);
  show($('st-temp-w'), s.cpu_temp_c != null);
  if (s.cpu_temp_c != null) $('st-temp').textContent = s.cpu_temp_c.toFixed(0);
  show($('st-bat-w'), s.battery_pct != null);
  if (s.battery_pct != null) {
    $('st-bat').textContent = s.battery_pct.toFixed(0);
    $('st-bat-bar').style.width = Math.max(0, Math.min(100, s.battery_pct)) + '%';
    $('st-bat-w').title = 'battery level ' + s.battery_level + ' of 11';
  }
  $('st-bat-w').classList.toggle('low', !!s.battery_low);
  show($('battery-banner'), !!s.battery_low);
  show($('estop-banner'), s.estop);
}

// ---------- shell ----------
async function boot() {
  document.querySelectorAll('.page').forEach((p) => show(p, false));
  const el = $('page-' + page);
  if (!el) { location.href = '/drive'; return; }
  show(el, true);
  if (page === 'login') { initLogin(); return; }
  try {
    const s = await api('GET', '/api/session');
    csrf = s.csrf;
    window.__session = s;
  } catch (_) { return; }
  show($('top'), true);
  show($('statusbar'), true);
  document.querySelectorAll('#nav a').forEach((a) => a.classList.toggle('active', a.dataset.page === page));
  $('estop').addEventListener('click', () => { pressEstop(); });
  $('estop-reset').addEventListener('click', () => {
    estopDone();
    command({ cmd: 'reset_e_stop' }).catch((e) => alert(e.message));
  });
  connectTelemetry();
  ({ drive: initDrive, calibrate: initCalibrate, models: initModels, race: initRace, settings: initSettings })[page]();
  if ('serviceWorker' in navigator && window.isSecureContext) navigator.serviceWorker.register('/sw.js').catch(() => {});
}

// ---------- login ----------
function initLogin() {
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    setMsg($('login-error'), '');
    try {
      await api('POST', '/api/login', { password: $('login-password').value });
      const next = new URLSearchParams(location.search).get('next') || '/drive';
      location.href = /^\/[a-z]+$/.test(next) ? next : '/drive';
    } catch (err) {
      $('login-error').textContent = err.message;
    }
  });
  $('login-password').focus();
}

// ---------- drive ----------
let driveWs = null, driveTimer = null, joy = { s: 0, t: 0 }, joyActive = false;
function openDriveWs() {
  if (driveWs && driveWs.readyState <= 1) return;
  driveWs = new WebSocket(wsUrl('/ws/drive?csrf=' + encodeURIComponent(csrf)));
  driveWs.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.error) setMsg($('drive-msg'), m.error, 'error');
  };
  driveWs.onclose = () => { driveWs = null; };
}
function closeDriveWs() { if (driveWs) { driveWs.close(); driveWs = null; } }

// Heartbeat: the car stops 250 ms after the last message, so send every
// 50 ms while manual driving is on and the page is visible; stop sending the
// moment it is hidden (screen locked, app switched).
function startHeartbeat() {
  if (driveTimer) return;
  openDriveWs();
  driveTimer = setInterval(() => {
    if (document.hidden) return;
    pollGamepad();
    if (driveWs && driveWs.readyState === 1) driveWs.send(JSON.stringify({ s: joy.s, t: joy.t }));
  }, 50);
}
function stopHeartbeat() {
  if (driveTimer) { clearInterval(driveTimer); driveTimer = null; }
  joy = { s: 0, t: 0 };
  setKnob(0, 0);
  closeDriveWs();
}
document.addEventListener('visibilitychange', () => {
  if (document.hidden) stopHeartbeat();
  else if (status && status.mode === 'manual' && page === 'drive') startHeartbeat();
});

function setKnob(x, y) {
  const k = $('joy-knob');
  if (!k) return;
  k.style.transform = `translate(${x * 100}%, ${y * 100}%)`;
  $('joy-s').textContent = joy.s.toFixed(2);
  $('joy-t').textContent = joy.t.toFixed(2);
}

function initJoystick() {
  const pad = $('joystick');
  let pid = null;
  const move = (e) => {
    const r = pad.getBoundingClientRect();
    let x = ((e.clientX - r.left) / r.width) * 2 - 1;
    let y = ((e.clientY - r.top) / r.height) * 2 - 1;
    const len = Math.hypot(x, y);
    if (len > 1) { x /= len; y /= len; }
    // Continuous values. Left on the pad = positive steering (DeepRacer:
    // a positive angle turns left); up = forward.
    joy = { s: Math.round(-x * 1000) / 1000, t: Math.round(-y * 1000) / 1000 };
    setKnob(x, y);
  };
  const end = (e) => {
    if (e.pointerId !== pid) return;
    pid = null; joyActive = false;
    joy = { s: 0, t: 0 }; setKnob(0, 0);
  };
  pad.addEventListener('pointerdown', (e) => {
    if (!status || status.mode !== 'manual') return;
    pid = e.pointerId; joyActive = true;
    pad.setPointerCapture(e.pointerId);
    move(e); e.preventDefault();
  });
  pad.addEventListener('pointermove', (e) => { if (e.pointerId === pid) { move(e); e.preventDefault(); } });
  pad.addEventListener('pointerup', end);
  pad.addEventListener('pointercancel', end);
  pad.addEventListener('lostpointercapture', end);
}

let gamepadSeen = false;
function pollGamepad() {
  if (joyActive || !navigator.getGamepads) return;
  const pads = navigator.getGamepads();
  for (const g of pads) {
    if (!g) continue;
    const dz = (v) => (Math.abs(v) < 0.08 ? 0 : v);
    const steer = -dz(g.axes[0] || 0);
    // Right trigger forward, left trigger reverse (standard mapping);
    // otherwise the left stick's vertical axis.
    let thr = -dz(g.axes[1] || 0);
    if (g.mapping === 'standard' && g.buttons[7] && g.buttons[6]) {
      const t = g.buttons[7].value - g.buttons[6].value;
      if (Math.abs(t) > 0.02) thr = t;
    }
    joy = { s: Math.round(steer * 1000) / 1000, t: Math.round(thr * 1000) / 1000 };
    setKnob(-steer, -thr);
    if (!gamepadSeen) { gamepadSeen = true; $('gamepad-name').textContent = '· gamepad'; }
    return;
  }
}

function drawCamera(ctx, canvas, img, hdr) {
  if (canvas.width !== img.width || canvas.height !== img.height) {
    canvas.width = img.width; canvas.height = img.height;
  }
  ctx.drawImage(img, 0, 0);
  const a = hdr.action;
  if (!a) return;
  const w = canvas.width, h = canvas.height, cx = w / 2, by = h * 0.95;
  // The chosen action: an arrow from the bottom centre, angle = steering,
  // length = throttle.
  const ang = (a.steering_angle_deg || a.steering * 30) * Math.PI / 180;
  const len = h * (0.15 + 0.45 * Math.max(0, Math.min(1, Math.abs(a.throttle))));
  const ex = cx - Math.sin(ang) * len, ey = by - Math.cos(ang) * len;
  ctx.lineCap = 'round';
  ctx.strokeStyle = '#000'; ctx.lineWidth = Math.max(8, w / 50);
  ctx.beginPath(); ctx.moveTo(cx, by); ctx.lineTo(ex, ey); ctx.stroke();
  ctx.strokeStyle = a.throttle < 0 ? '#ff3030' : '#ffd400'; ctx.lineWidth = Math.max(5, w / 90);
  ctx.beginPath(); ctx.moveTo(cx, by); ctx.lineTo(ex, ey); ctx.stroke();
  ctx.font = `bold ${Math.round(h / 16)}px system-ui, sans-serif`;
  ctx.fillStyle = '#fff'; ctx.strokeStyle = '#000'; ctx.lineWidth = 4;
  const label = (a.index != null ? '#' + a.index + '  ' : '') +
    (a.steering_angle_deg || 0).toFixed(0) + '°  ' + (a.speed_mps || 0).toFixed(2) + ' m/s';
  ctx.strokeText(label, 10, h / 12); ctx.fillText(label, 10, h / 12);
}

function connectCamera() {
  const canvas = $('camera'), ctx = canvas.getContext('2d');
  let frames = 0, since = performance.now(), busy = false;
  window.__cameraFrames = 0;
  const ws = new WebSocket(wsUrl('/ws/camera'));
  ws.binaryType = 'arraybuffer';
  ws.onmessage = async (e) => {
    // Decoding a frame while the previous one still decodes would queue
    // them; drop instead, like the server does.
    if (busy) return;
    busy = true;
    try {
      const buf = e.data, dv = new DataView(buf);
      const n = dv.getUint32(0, true);
      const hdr = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
      const blob = new Blob([new Uint8Array(buf, 4 + n)], { type: 'image/jpeg' });
      const img = await createImageBitmap(blob);
      drawCamera(ctx, canvas, img, hdr);
      img.close();
      frames++; window.__cameraFrames++; window.__cameraSeq = hdr.seq;
      const now = performance.now();
      if (now - since > 1000) {
        $('camera-info').textContent = `${hdr.w}×${hdr.h} · ${(frames * 1000 / (now - since)).toFixed(0)} fps · frame ${hdr.seq}`;
        frames = 0; since = now;
      }
    } catch (_) { /* a bad frame is skipped */ } finally { busy = false; }
  };
  ws.onclose = () => setTimeout(connectCamera, 1000);
}

function initDrive() {
  let selectedMode = 'autonomous';
  const speed = $('max-speed');
  let speedTouched = false, speedTimer = null;
  const renderMode = () => {
    $('mode-auto').classList.toggle('on', selectedMode === 'autonomous');
    $('mode-manual').classList.toggle('on', selectedMode === 'manual');
    $('joy-wrap').classList.toggle('disabled', !(status && status.mode === 'manual'));
  };
  document.querySelectorAll('.seg button').forEach((b) => b.addEventListener('click', async () => {
    selectedMode = b.dataset.mode;
    renderMode();
    // Switching mode while driving switches the car at once; while stopped
    // it only picks what Start will do.
    if (status && (status.mode === 'manual' || status.mode === 'autonomous')) {
      try { await command({ cmd: 'set_mode', mode: selectedMode }); } catch (e) { setMsg($('drive-msg'), e.message, 'error'); }
    }
  }));
  $('btn-start').addEventListener('click', async () => {
    try {
      await command({ cmd: 'set_mode', mode: selectedMode });
      setMsg($('drive-msg'), selectedMode === 'manual' ? 'Manual: drag the joystick.' : 'Driving autonomously.', 'ok');
    } catch (e) { setMsg($('drive-msg'), e.message, 'error'); }
  });
  $('btn-stop').addEventListener('click', async () => {
    stopHeartbeat();
    try { await command({ cmd: 'set_mode', mode: 'stopped' }); setMsg($('drive-msg'), 'Stopped.', ''); }
    catch (e) { setMsg($('drive-msg'), e.message, 'error'); }
  });
  speed.addEventListener('input', () => {
    speedTouched = true;
    $('max-speed-val').textContent = speed.value;
    clearTimeout(speedTimer);
    speedTimer = setTimeout(() => {
      command({ cmd: 'set_max_speed', percent: Number(speed.value) })
        .then(() => { speedTouched = false; })
        .catch((e) => setMsg($('drive-msg'), e.message, 'error'));
    }, 80);
  });
  statusListeners.push((s) => {
    if (!speedTouched && document.activeElement !== speed) {
      speed.value = Math.round(s.max_speed_pct);
      $('max-speed-val').textContent = speed.value;
    }
    if (s.mode === 'manual' || s.mode === 'autonomous') selectedMode = s.mode;
    if (s.mode === 'manual' && !document.hidden) startHeartbeat(); else stopHeartbeat();
    renderMode();
    $('btn-start').disabled = s.estop || s.mode === selectedMode;
    $('btn-stop').disabled = s.mode === 'stopped';
    const m = s.model;
    const name = m.active ? m.active.split('/').pop() : 'none';
    let line = 'Model: ' + name + ' · ' + m.state;
    if (m.state === 'error' && m.error) line += ': ' + m.error;
    $('model-line').textContent = line + (s.last_event ? ' · ' + s.last_event : '');
  });
  initJoystick();
  renderMode();
  connectCamera();
}

// ---------- calibrate ----------
function initCalibrate() {
  let view = null, draft = null, step = 0, holdTimer = null;
  const us = (ns) => Math.round(ns / 1000);
  // The wizard's steps: which channel and what the pulse becomes.
  const steps = [
    { title: 'Lift the car', text: 'Put the car on a stand so the wheels spin freely, then press Begin. The wheels will move.' },
    { ch: 'steering', key: 'mid', title: 'Steering centre', text: 'Nudge until the front wheels point straight ahead.' },
    { ch: 'steering', key: 'left', title: 'Full left', text: 'Nudge until the wheels are at full left lock, without the servo straining (buzzing).' },
    { ch: 'steering', key: 'right', title: 'Full right', text: 'Nudge until the wheels are at full right lock, without the servo straining.' },
    { check: 'steering', title: 'Check steering', text: 'The wheels now steer to your full-left value. Did the wheels turn LEFT?' },
    { ch: 'throttle', key: 'mid', title: 'Throttle neutral', text: 'Find the value where the wheels do not turn. Hold the test button to check.' },
    { ch: 'throttle', key: 'fwd', title: 'Forward', text: 'Set the fastest forward speed you want. Hold the test button: the wheels spin while you hold it.' },
    { ch: 'throttle', key: 'rev', title: 'Reverse', text: 'Set the fastest reverse speed. Hold the test button to check.' },
    { check: 'throttle', title: 'Check throttle', text: 'Hold the test button: the wheels spin at your forward value. Did the car drive FORWARD?' },
    { review: true, title: 'Review and save', text: 'Values in microseconds. Save keeps them across restarts; Cancel restores the saved calibration.' },
  ];
  // Wizard values (ns) keyed by direction rather than min/max: polarity
  // falls out of which side is larger.
  let w = {};
  const fromCal = (c) => ({
    steering: { mid: c.steering.mid, left: c.steering.polarity > 0 ? c.steering.max : c.steering.min,
      right: c.steering.polarity > 0 ? c.steering.min : c.steering.max },
    throttle: { mid: c.throttle.mid, fwd: c.throttle.polarity > 0 ? c.throttle.max : c.throttle.min,
      rev: c.throttle.polarity > 0 ? c.throttle.min : c.throttle.max },
  });
  const toCal = () => {
    const ch = (mid, pos, neg) => (pos > neg
      ? { min: neg, mid, max: pos, polarity: 1 }
      : { min: pos, mid, max: neg, polarity: -1 });
    return {
      steering: ch(w.steering.mid, w.steering.left, w.steering.right),
      throttle: ch(w.throttle.mid, w.throttle.fwd, w.throttle.rev),
      period_ns: draft.period_ns,
    };
  };
  const renderTable = (el, c) => {
    el.innerHTML = '<tr><th></th><th>min</th><th>mid</th><th>max</th><th>polarity</th></tr>' +
      ['steering', 'throttle'].map((k) => `<tr><td>${k}</td><td>${us(c[k].min)} µs</td><td>${us(c[k].mid)} µs</td><td>${us(c[k].max)} µs</td><td>${c[k].polarity > 0 ? '+1' : '−1'}</td></tr>`).join('');
  };
  const load = async () => {
    view = await api('GET', '/api/calibration');
    renderTable($('cal-current'), view.live);
    if (!draft) { draft = JSON.parse(JSON.stringify(view.live)); w = fromCal(draft); }
  };
  const pulse = (ch, ns) => api('POST', '/api/calibration/pulse', { channel: ch, pulse_ns: ns });
  const value = () => { const s = steps[step]; return w[s.ch][s.key]; };
  const setValue = async (ns) => {
    const s = steps[step];
    ns = Math.max(500000, Math.min(2500000, Math.round(ns / 1000) * 1000));
    w[s.ch][s.key] = ns;
    $('cal-value').textContent = us(ns);
    $('cal-slider').value = us(ns);
    // Steering moves live; throttle only spins while the test is held.
    if (s.ch === 'steering') {
      try { await pulse('steering', ns); setMsg($('cal-msg'), ''); } catch (e) { setMsg($('cal-msg'), e.message, 'error'); }
    }
  };
  const render = () => {
    const s = steps[step];
    $('cal-progress').innerHTML = steps.map((_, i) => `<span class="${i < step ? 'done' : i === step ? 'cur' : ''}"></span>`).join('');
    $('cal-title').textContent = s.title;
    $('cal-text').textContent = s.text;
    show($('cal-adjust'), !!s.ch || s.check === 'throttle');
    show($('cal-check'), !!s.check);
    show($('cal-review'), !!s.review);
    show($('cal-test'), s.ch === 'throttle' || s.check === 'throttle');
    document.querySelectorAll('.nudges, #cal-slider, .pulse-readout').forEach((el) => show(el, !!s.ch));
    $('cal-next').textContent = step === 0 ? 'Begin' : 'Next';
    show($('cal-next'), !s.review && !s.check);
    $('cal-back').disabled = step === 0;
    if (s.ch) {
      $('cal-value').textContent = us(value());
      $('cal-slider').value = us(value());
      if (s.ch === 'steering') pulse('steering', value()).catch((e) => setMsg($('cal-msg'), e.message, 'error'));
      else pulse('steering', w.steering.mid).catch(() => {});
    }
    if (s.check === 'steering') pulse('steering', w.steering.left).catch((e) => setMsg($('cal-msg'), e.message, 'error'));
    if (s.review) renderTable($('cal-review'), toCal());
  };
  const go = async (n) => {
    try {
      if (step === 0 && n === 1) {
        await command({ cmd: 'set_mode', mode: 'calibration' });
      }
      step = Math.max(0, Math.min(steps.length - 1, n));
      setMsg($('cal-msg'), '');
      render();
    } catch (e) { setMsg($('cal-msg'), e.message, 'error'); }
  };
  $('cal-next').addEventListener('click', () => go(step + 1));
  $('cal-back').addEventListener('click', () => go(step - 1));
  $('cal-yes').addEventListener('click', () => go(step + 1));
  $('cal-no').addEventListener('click', () => {
    // Wheels went the other way: the two ends are swapped.
    const s = steps[step];
    if (s.check === 'steering') { const t = w.steering.left; w.steering.left = w.steering.right; w.steering.right = t; }
    else { const t = w.throttle.fwd; w.throttle.fwd = w.throttle.rev; w.throttle.rev = t; }
    setMsg($('cal-msg'), 'Swapped: polarity flipped. Check again.', 'ok');
    render();
  });
  document.querySelectorAll('[data-nudge]').forEach((b) => b.addEventListener('click', () => {
    setValue(value() + Number(b.dataset.nudge) * 1000);
  }));
  $('cal-slider').addEventListener('input', (e) => setValue(Number(e.target.value) * 1000));
  // Throttle test: repeat the pulse every 100 ms while held; the car drops
  // it 250 ms after the last one, so letting go (or losing the phone) stops.
  const testNs = () => { const s = steps[step]; return s.check === 'throttle' ? w.throttle.fwd : value(); };
  const holdStart = (e) => {
    e.preventDefault();
    if (holdTimer) return;
    const send = () => pulse('throttle', testNs()).catch((err) => setMsg($('cal-msg'), err.message, 'error'));
    send();
    holdTimer = setInterval(send, 100);
  };
  const holdEnd = () => {
    if (!holdTimer) return;
    clearInterval(holdTimer); holdTimer = null;
    pulse('throttle', w.throttle.mid).catch(() => {});
  };
  $('cal-test').addEventListener('pointerdown', holdStart);
  ['pointerup', 'pointercancel', 'pointerleave'].forEach((ev) => $('cal-test').addEventListener(ev, holdEnd));
  document.addEventListener('visibilitychange', () => { if (document.hidden) holdEnd(); });

  $('cal-save').addEventListener('click', async () => {
    try {
      if (step > 0) await api('POST', '/api/calibration', toCal());
      view = await api('POST', '/api/calibration/save');
      renderTable($('cal-current'), view.saved);
      await command({ cmd: 'set_mode', mode: 'stopped' }).catch(() => {});
      setMsg($('cal-msg'), 'Saved. The calibration survives a restart.', 'ok');
      step = 0; draft = JSON.parse(JSON.stringify(view.saved)); w = fromCal(draft); render();
    } catch (e) { setMsg($('cal-msg'), e.message, 'error'); }
  });
  $('cal-cancel').addEventListener('click', async () => {
    try {
      view = await api('POST', '/api/calibration/cancel');
      await command({ cmd: 'set_mode', mode: 'stopped' }).catch(() => {});
      draft = JSON.parse(JSON.stringify(view.saved)); w = fromCal(draft);
      renderTable($('cal-current'), view.live);
      step = 0; render();
      setMsg($('cal-msg'), 'Cancelled: the saved calibration is back.', '');
    } catch (e) { setMsg($('cal-msg'), e.message, 'error'); }
  });
  $('cal-import').addEventListener('change', async (e) => {
    const f = e.target.files[0];
    if (!f) return;
    try {
      view = await api('POST', '/api/calibration/import', await f.arrayBuffer(), true);
      renderTable($('cal-current'), view.live);
      draft = JSON.parse(JSON.stringify(view.live)); w = fromCal(draft);
      step = steps.length - 1; render();
      setMsg($('cal-msg'), 'Imported ' + f.name + '. Review, then Save.', 'ok');
    } catch (err) { setMsg($('cal-msg'), err.message, 'error'); }
    e.target.value = '';
  });
  load().then(render).catch((e) => setMsg($('cal-msg'), e.message, 'error'));
}

// ---------- models ----------
function initModels() {
  let pollTimer = null;
  const refresh = async () => {
    const d = await api('GET', '/api/models');
    const st = d.status;
    const stName = (p) => (p ? p.split('/').pop() : '');
    let text = 'Driving with: ' + (stName(st.active) || 'no model');
    if (st.state === 'loading') text = 'Loading ' + stName(st.requested) + '… (' + (stName(st.active) || 'no model') + ' still drives)';
    if (st.state === 'error') text = 'Loading ' + stName(st.requested) + ' failed: ' + st.error + '\nStill driving with: ' + (stName(st.active) || 'no model');
    setMsg($('model-status'), text, st.state === 'error' ? 'error' : '');
    $('model-status').dataset.state = st.state;
    const ul = $('model-list');
    ul.innerHTML = '';
    for (const m of d.models) {
      const li = document.createElement('li');
      li.dataset.name = m.name;
      const info = document.createElement('div');
      info.className = 'grow';
      const b = document.createElement('b'); b.textContent = m.name; info.appendChild(b);
      if (m.active) { const s = document.createElement('span'); s.className = 'badge loaded'; s.textContent = 'driving'; info.append(' ', s); }
      else if (st.state === 'loading' && stName(st.requested) === m.name) { const s = document.createElement('span'); s.className = 'badge loading'; s.textContent = 'loading'; info.append(' ', s); }
      const sub = document.createElement('div'); sub.className = 'hint small';
      sub.textContent = (m.summary ? m.summary.action_space + ' · ' + m.summary.input + ' · ' : '') + (m.size_bytes / 1024).toFixed(0) + ' KiB';
      info.appendChild(sub);
      const load = document.createElement('button'); load.type = 'button'; load.className = 'primary'; load.textContent = 'Load';
      load.disabled = m.active || st.state === 'loading';
      load.addEventListener('click', async () => {
        try { await api('POST', '/api/models/' + encodeURIComponent(m.name) + '/load'); } catch (e) { setMsg($('model-status'), e.message, 'error'); }
        refresh(); startPoll();
      });
      const del = document.createElement('button'); del.type = 'button'; del.className = 'secondary'; del.textContent = 'Delete';
      del.disabled = m.active;
      del.addEventListener('click', async () => {
        if (!confirm('Delete ' + m.name + '?')) return;
        try { await api('DELETE', '/api/models/' + encodeURIComponent(m.name)); } catch (e) { setMsg($('model-status'), e.message, 'error'); }
        refresh();
      });
      li.append(info, load, del);
      ul.appendChild(li);
    }
    if (st.state !== 'loading' && pollTimer) { clearInterval(pollTimer); pollTimer = null; }
    return d;
  };
  const startPoll = () => { if (!pollTimer) pollTimer = setInterval(() => refresh().catch(() => {}), 500); };

  $('upload-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const files = $('upload-files').files;
    if (!files.length) { setMsg($('upload-result'), 'Choose model.onnx and model_metadata.json, or a .tar.gz.', 'error'); return; }
    const fd = new FormData();
    if ($('upload-name').value.trim()) fd.append('name', $('upload-name').value.trim());
    for (const f of files) fd.append('files', f, f.name);
    // XHR, not fetch: fetch cannot report upload progress.
    const xhr = new XMLHttpRequest();
    const bar = $('upload-progress');
    show(bar, true); bar.value = 0;
    setMsg($('upload-result'), 'Uploading…', '');
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) bar.value = (ev.loaded * 100) / ev.total; };
    xhr.upload.onload = () => { bar.value = 100; setMsg($('upload-result'), 'Checking the model…', ''); };
    xhr.onload = () => {
      let d = null; try { d = JSON.parse(xhr.responseText); } catch (_) { d = null; }
      if (xhr.status === 200) {
        setMsg($('upload-result'), 'OK: installed "' + d.name + '" (' + d.summary.action_space + '). Press Load to drive with it.', 'ok');
        $('upload-form').reset();
      } else {
        setMsg($('upload-result'), 'Rejected: ' + ((d && d.error) || ('HTTP ' + xhr.status)), 'error');
      }
      show(bar, false);
      refresh();
    };
    xhr.onerror = () => { setMsg($('upload-result'), 'Upload failed: connection lost.', 'error'); show(bar, false); };
    xhr.open('POST', '/api/models');
    xhr.setRequestHeader('X-CSRF-Token', csrf);
    xhr.send(fd);
  });
  refresh().then((d) => { if (d.status.state === 'loading') startPoll(); }).catch((e) => setMsg($('model-status'), e.message, 'error'));
}

// ---------- race ----------
function initRace() {
  let data = null, fetchedAt = 0;
  const render = () => {
    const r = data.race, s = r.current;
    const running = s && !s.finished;
    const drift = running ? Date.now() - fetchedAt : 0;
    const elapsed = Math.min(r.elapsed_ms + drift, s ? s.duration_s * 1000 : 0);
    const remaining = running ? Math.max(0, r.remaining_ms - drift) : (s ? r.remaining_ms : 240000);
    $('race-remaining').textContent = fmtMs(remaining);
    $('race-lap-time').textContent = s ? ((Math.max(0, elapsed - s.current_lap_start_ms)) / 1000).toFixed(3) : '0.000';
    $('race-lap').disabled = !running; $('race-off').disabled = !running; $('race-end').disabled = !running;
    $('race-start').textContent = running ? 'Restart' : 'Start race';
    $('race-off-count').textContent = s ? s.current_offtracks : 0;
  };
  const renderLists = () => {
    const s = data.race.current;
    const ol = $('race-laps'); ol.innerHTML = '';
    if (s) {
      for (const l of s.laps) {
        const li = document.createElement('li');
        li.textContent = fmtLap(l.time_ms) + (l.offtracks ? `  (${l.offtracks} off)` : '') + (l.dnf ? '  DNF' : '');
        if (l.dnf) li.className = 'dnf';
        else if (l.time_ms === s.best_lap_ms) li.className = 'best';
        ol.appendChild(li);
      }
    }
    $('race-best').textContent = s && s.best_lap_ms != null ? 'best ' + fmtLap(s.best_lap_ms) : '';
    const ul = $('race-history'); ul.innerHTML = '';
    for (const h of data.history) {
      const li = document.createElement('li');
      const valid = h.laps.filter((l) => !l.dnf).length;
      li.textContent = new Date(h.started_unix_ms).toLocaleString() + ' · ' + valid + ' laps · best ' +
        (h.best_lap_ms != null ? fmtLap(h.best_lap_ms) : '–');
      ul.appendChild(li);
    }
  };
  const set = (d) => { data = d; fetchedAt = Date.now(); render(); renderLists(); };
  const act = (path, body) => api('POST', path, body).then(set).catch((e) => alert(e.message));
  $('race-start').addEventListener('click', () => act('/api/race/start', { duration_s: Number($('race-duration').value) }));
  $('race-lap').addEventListener('click', () => act('/api/race/lap'));
  $('race-off').addEventListener('click', () => act('/api/race/offtrack'));
  $('race-end').addEventListener('click', () => act('/api/race/stop'));
  const poll = () => api('GET', '/api/race').then(set).catch(() => {});
  poll();
  setInterval(() => { if (data) render(); }, 100);
  setInterval(poll, 2000);
}

// ---------- settings ----------
function initSettings() {
  const s = window.__session || {};
  $('settings-info').textContent = (s.tls ? 'HTTPS with the car\'s own certificate.' : 'Plain HTTP (local simulation).') +
    (s.initial_password ? ' The generated password is still in use: change it.' : '');
  $('pw-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    if ($('pw-new').value !== $('pw-new2').value) { setMsg($('pw-msg'), 'The new passwords differ.', 'error'); return; }
    try {
      await api('POST', '/api/password', { current: $('pw-current').value, new: $('pw-new').value });
      setMsg($('pw-msg'), 'Password changed. Other phones are logged out.', 'ok');
      $('pw-form').reset();
    } catch (err) { setMsg($('pw-msg'), err.message, 'error'); }
  });
  initTailLight();
  $('logout').addEventListener('click', async () => {
    await api('POST', '/api/logout').catch(() => {});
    location.href = '/login';
  });
}

// The tail-light card shows only when the car has one (GET says available).
const hex2 = (v) => v.toString(16).padStart(2, '0');
const colourHex = (c) => '#' + hex2(c.r) + hex2(c.g) + hex2(c.b);
const hexColour = (h) => ({ r: parseInt(h.slice(1, 3), 16), g: parseInt(h.slice(3, 5), 16), b: parseInt(h.slice(5, 7), 16) });
function initTailLight() {
  const input = $('tail-colour'), save = $('tail-save'), msg = $('tail-status');
  const render = (d) => {
    show($('tail-card'), !!(d && d.available));
    if (d && d.colour) input.value = colourHex(d.colour);
  };
  input.addEventListener('input', () => setMsg(msg, 'Not saved yet.', ''));
  save.addEventListener('click', async () => {
    save.disabled = true;
    setMsg(msg, 'Saving…', '');
    try {
      render(await api('POST', '/api/tail-light', hexColour(input.value)));
      setMsg(msg, 'Saved', 'ok');
    } catch (e) { setMsg(msg, e.message, 'error'); }
    save.disabled = false;
  });
  api('GET', '/api/tail-light').then(render).catch(() => render(null));
}

boot();
