// The Conversation tab's page code (run by gr.HTML's js_on_load: `element` is the tab's box).
// Microphone -> AudioWorklet (resampled to 24 kHz) -> 20 ms int16 frames -> WebSocket
// (s2s/serve/converse.py's protocol); reply PCM <- WebSocket -> a player AudioWorklet (resampled
// to the device's rate) with a small jitter buffer. One AudioContext clocks both, so the page can
// time speech end -> first sound itself; window.s2sConverse keeps those times for
// scripts/converse_browser.py.
// The AudioContext runs at the device's own rate (Firefox refuses to connect a microphone to a
// context of another rate), so the worklets resample: the wire is 24 kHz both ways.
const box = element;
const $ = (sel) => box.querySelector(sel);
const RATE = 24000, FRAME = 480;  // the wire: 24 kHz, 20 ms frames

// A streaming windowed-sinc resampler (any two rates): output sample j sits at input position
// j * from / to; the low-pass at 0.45 x the lower rate keeps what the slower side cannot carry
// from folding back. Taps come from a table (1/64 sample steps): the audio thread has ~2.7 ms
// per render quantum. Runs in the worklets (its source is pasted into WORKLETS below).
class Resampler {
  constructor(from, to, zeros = 8) {
    this.step = from / to;
    this.cut = 0.45 * Math.min(1, to / from);  // cycles per input sample
    this.half = zeros / (2 * this.cut);  // kernel half-width in input samples
    this.res = 64;
    const n = Math.ceil(this.half * this.res) + 2;
    this.table = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const t = i / this.res, x = 2 * this.cut * t;
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
      this.table[i] = t < this.half ? sinc * 0.5 * (1 + Math.cos(Math.PI * t / this.half)) : 0;
    }
    this.reset();
  }
  reset() {  // a new stream: silence before it
    this.buf = new Float32Array(Math.ceil(this.half) + 1);
    this.pos = this.buf.length;
  }
  push(x) {  // Float32Array in -> Float32Array out (what the input so far determines)
    const all = new Float32Array(this.buf.length + x.length);
    all.set(this.buf); all.set(x, this.buf.length);
    const out = [];
    const { half, res, table } = this;
    while (this.pos + half < all.length - 1) {
      const p = this.pos, lo = Math.max(0, Math.ceil(p - half)), hi = Math.floor(p + half);
      let acc = 0, norm = 0;
      for (let k = lo; k <= hi; k++) {
        const d = Math.abs(p - k) * res, i = Math.floor(d), f = d - i;
        const w = table[i] + (table[i + 1] - table[i]) * f;
        acc += w * all[k]; norm += w;
      }
      out.push(norm > 0 ? acc / norm : 0);
      this.pos += this.step;
    }
    const drop = Math.max(0, Math.floor(this.pos - half) - 1);
    this.buf = all.slice(drop);
    this.pos -= drop;
    return Float32Array.from(out);
  }
  flush() {  // the end of a stream: push out what the kernel still holds back
    const out = this.push(new Float32Array(Math.ceil(this.half) + 2));
    this.reset();
    return out;
  }
}

const WORKLETS = `
${Resampler}
class Mic extends AudioWorkletProcessor {
  constructor() { super(); this.started = false; this.rs = new Resampler(sampleRate, ${RATE}); }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch && ch.length) {
      if (!this.started) { this.started = true; this.port.postMessage({type: "start", time: currentTime}); }
      const x = sampleRate === ${RATE} ? ch.slice(0) : this.rs.push(ch);
      this.port.postMessage({type: "pcm", data: x, frames: ch.length}, [x.buffer]);
    }
    return true;
  }
}
class Player extends AudioWorkletProcessor {
  constructor() {
    super();
    this.prebuffer = Math.round(0.02 * sampleRate);  // play once 20 ms are queued
    this.queue = []; this.offset = 0; this.queued = 0; this.turn = -1; this.playing = false;
    this.sounding = false; this.flushed = null; this.ended = false; this.rs = null;
    this.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === "rate") this.rs = m.rate === sampleRate ? null : new Resampler(m.rate, sampleRate);
      else if (m.type === "audio") {
        if (m.turn !== this.turn) {
          this.turn = m.turn; this.sounding = false; this.playing = false; this.ended = false;
          if (this.rs) this.rs.reset();
        }
        this.add(this.rs ? this.rs.push(m.data) : m.data);
      } else if (m.type === "end") {
        if (m.turn === this.turn) { if (this.rs) this.add(this.rs.flush()); this.ended = true; }
      } else if (m.type === "flush") {
        this.queue = []; this.offset = 0; this.queued = 0; this.playing = false; this.flushed = m.turn;
        if (this.rs) this.rs.reset();
      }
    };
  }
  add(x) { if (x.length) { this.queue.push(x); this.queued += x.length; } }
  process(inputs, outputs) {
    const out = outputs[0];
    const n = out[0].length;
    if (!this.playing && (this.queued >= this.prebuffer || (this.ended && this.queued > 0))) this.playing = true;
    let i = 0;
    while (this.playing && i < n && this.queue.length) {
      const buf = this.queue[0];
      const take = Math.min(n - i, buf.length - this.offset);
      for (let j = 0; j < take; j++) {
        const v = buf[this.offset + j];
        out[0][i + j] = v;
        if (!this.sounding && Math.abs(v) > 0.01) {
          this.sounding = true;
          this.port.postMessage({type: "sounding", turn: this.turn, time: currentTime + (i + j) / sampleRate});
        }
      }
      i += take; this.offset += take; this.queued -= take;
      if (this.offset >= buf.length) { this.queue.shift(); this.offset = 0; }
    }
    for (let c = 1; c < out.length; c++) out[c].set(out[0]);
    if (this.flushed !== null) { this.port.postMessage({type: "silent", turn: this.flushed, time: currentTime}); this.flushed = null; }
    return true;
  }
}
registerProcessor("s2s-mic", Mic);
registerProcessor("s2s-player", Player);
`;

const S = window.s2sConverse = {captureStart: null, turns: {}, closed: null, ready: null, sent: 0, errors: [],
                                 contextRate: null, micStarted: false, micSeconds: 0};  // captured, device clock
let ctx = null, ws = null, stream = null, player = null, pending = new Float32Array(0), cancelled = new Set();

function status(text) { $(".cv-status").textContent = text; }
function ms(x) { return x === undefined || x === null ? "–" : `${Math.round(x)}`; }

function row(n) {
  const t = S.turns[n] || (S.turns[n] = {turn: n});
  let tr = $(`tr[data-turn="${n}"]`);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.turn = n;
    $(".cv-turns tbody").prepend(tr);
  }
  const server = t.timings || {};
  tr.innerHTML = `<td>${n}</td><td class="cv-latency">${ms(t.soundMs)}</td><td>${ms(t.waitMs)}</td>` +
    `<td>${ms(server.end_to_first_audio_sent_ms)}</td><td>${ms(server.prepared_before_end_ms)}</td>` +
    `<td>${server.reply_seconds !== undefined ? server.reply_seconds.toFixed(2) : "–"}</td>` +
    `<td>${t.bargeIn !== undefined ? "interrupted: you spoke over it" : (t.ignored || "")}</td>`;
  return t;
}

function drawCodes(n, codes) {
  const canvas = $(".cv-grid");
  const g = canvas.getContext("2d");
  const t = S.turns[n] || row(n);
  if (t.columns === undefined) {  // a new reply: start the grid again
    t.columns = 0;
    g.clearRect(0, 0, canvas.width, canvas.height);
    $(".cv-grid-label").textContent = `reply ${n}: codes as they are generated (${codes[0].length} codebooks x frames)`;
  }
  const k = codes[0].length, h = canvas.height / k, w = 3;
  for (const frame of codes) {
    if ((t.columns + 1) * w > canvas.width) break;
    frame.forEach((c, i) => { g.fillStyle = `hsl(${(c * 137) % 360} 70% 50%)`; g.fillRect(t.columns * w, i * h, w, h - 1); });
    t.columns += 1;
  }
}

function onMessage(ev) {
  if (typeof ev.data !== "string") {
    const view = new DataView(ev.data);
    const n = view.getUint32(0, true);
    if (cancelled.has(n)) return;
    const pcm = new Int16Array(ev.data, 4);
    const f = new Float32Array(pcm.length);
    for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 32768;
    player.port.postMessage({type: "audio", turn: n, data: f}, [f.buffer]);
    return;
  }
  const m = JSON.parse(ev.data);
  const now = ctx.currentTime;
  if (m.type === "ready") {
    S.ready = m;
    player.port.postMessage({type: "rate", rate: m.sample_rate});
    status("Connected. Opening the microphone…");
    const socket = ws;
    const how = m.turn_head ? `it answers when you have finished (a pause of ${m.end_silence_ms} ms always ends your turn)`
                            : `a pause of ${m.end_silence_ms} ms ends your turn`;
    startMic().then(() => { if (ws === socket) status(`Listening. Talk; ${how}.`); },
                    (e) => { if (ws === socket) fail(micError(e)); });
  }
  else if (m.type === "speech") status("Hearing you…");
  else if (m.type === "turn") {
    const t = row(m.turn);
    t.speechEnd = S.captureStart + m.speech_end; t.decided = now; t.waitMs = (now - t.speechEnd) * 1000;
    row(m.turn); status("Replying…");
  } else if (m.type === "codes") drawCodes(m.turn, m.codes);
  else if (m.type === "first_audio" || m.type === "reply_end") {
    const t = row(m.turn); t.timings = m.timings;
    if (m.type === "reply_end") { player.port.postMessage({type: "end", turn: m.turn}); t.ended = now; }
    row(m.turn);
  } else if (m.type === "barge_in") {
    cancelled.add(m.turn);
    player.port.postMessage({type: "flush", turn: m.turn});
    const t = row(m.turn); t.bargeIn = now; status("Interrupted: you spoke over the reply. Listening…");
  } else if (m.type === "backchannel") {
    status("Replying… (heard you: going on)");
  } else if (m.type === "ignored") {
    status(`Not answered: ${m.reason}`);
    if (m.turn !== undefined) { row(m.turn).ignored = "not answered"; row(m.turn); }
  }
}

function onPlayer(e) {
  const m = e.data, t = S.turns[m.turn] || row(m.turn);
  if (m.type === "sounding") {
    t.sounding = m.time;
    if (t.speechEnd !== undefined) t.soundMs = (m.time - t.speechEnd) * 1000;
    row(m.turn);
  } else if (m.type === "silent") {
    t.silentAt = m.time;
    row(m.turn);
  }
}

function sendFrames(x) {
  const all = new Float32Array(pending.length + x.length);
  all.set(pending); all.set(x, pending.length);
  let i = 0;
  for (; i + FRAME <= all.length; i += FRAME) {
    const pcm = new Int16Array(FRAME);
    for (let j = 0; j < FRAME; j++) pcm[j] = Math.max(-32768, Math.min(32767, Math.round(all[i + j] * 32767)));
    if (ws && ws.readyState === 1) { ws.send(pcm.buffer); S.sent += 1; }
  }
  pending = all.slice(i);
}

async function startMic() {
  stream = await navigator.mediaDevices.getUserMedia(
    {audio: {echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1}});
  if (!ctx) { stream.getTracks().forEach((t) => t.stop()); return; }  // stopped while the browser asked
  const source = ctx.createMediaStreamSource(stream), sampleRate = ctx.sampleRate;
  const mic = new AudioWorkletNode(ctx, "s2s-mic", {numberOfOutputs: 1, outputChannelCount: [1]});
  const mute = ctx.createGain(); mute.gain.value = 0;
  mic.port.onmessage = (e) => {
    if (e.data.type === "start") S.captureStart = e.data.time;
    else { S.micSeconds += e.data.frames / sampleRate; sendFrames(e.data.data); }
  };
  source.connect(mic); mic.connect(mute); mute.connect(ctx.destination);
  S.micStarted = true;
}

// What went wrong, in words a visitor can act on (the browser's own name and message kept).
function micError(e) {
  const said = `(${e && e.name ? e.name : "Error"}: ${e && e.message ? e.message : e})`;
  const name = e && e.name;
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError")
    return `the microphone was refused: allow it for this page (the icon in the address bar) and start again ${said}`;
  if (name === "NotFoundError" || name === "OverconstrainedError")
    return `no microphone was found: plug one in or pick one in the browser's settings ${said}`;
  if (name === "NotReadableError" || name === "AbortError")
    return `the microphone could not be opened: another program may be using it ${said}`;
  return `the microphone could not be started ${said}`;
}

// Why this page cannot talk at all, before anything is opened (null: it can).
function unsupported() {
  if (!window.isSecureContext)
    return `this page is not a secure context (${location.protocol}//${location.host}): browsers give ` +
      "the microphone only to https pages or to localhost. Open the app over https, or at " +
      "http://localhost / http://127.0.0.1 on the machine that runs it.";
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia)
    return "this browser gives no access to microphones (navigator.mediaDevices.getUserMedia is missing).";
  const AC = window.AudioContext || window.webkitAudioContext;
  if (!AC) return "this browser has no Web Audio (AudioContext).";
  if (!window.AudioWorkletNode) return "this browser has no AudioWorklet, which the page plays and records through.";
  return null;
}

function fail(reason) {
  S.errors.push(reason);
  stop();
  status(`Could not start: ${reason}`);
}

async function start() {
  if (ws || ctx) return;
  S.turns = {}; S.closed = null; S.captureStart = null; S.sent = 0; S.micStarted = false; S.micSeconds = 0;
  cancelled = new Set(); pending = new Float32Array(0);
  $(".cv-turns tbody").innerHTML = "";
  const why = unsupported();
  if (why) { fail(why); return; }
  $(".cv-start").disabled = true; $(".cv-stop").disabled = false;
  status("Opening audio…");
  try {
    ctx = new AudioContext({latencyHint: "interactive"});  // the device's rate: see the top of the file
    S.contextRate = ctx.sampleRate;
    const url = URL.createObjectURL(new Blob([WORKLETS], {type: "application/javascript"}));
    await ctx.audioWorklet.addModule(url);
    URL.revokeObjectURL(url);
    player = new AudioWorkletNode(ctx, "s2s-player", {numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1]});
    player.port.onmessage = onPlayer;
    player.connect(ctx.destination);
    await ctx.resume();
    S.outputLatency = (ctx.baseLatency || 0) + (ctx.outputLatency || 0);
  } catch (e) { fail(`the page's audio could not start (${e && e.name ? e.name : "Error"}: ${e && e.message ? e.message : e})`); return; }
  const url = new URL("converse/ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  const socket = ws = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => socket.send(JSON.stringify({type: "start", sample_rate: RATE}));
  socket.onmessage = (ev) => { if (ws === socket) onMessage(ev); };
  socket.onclose = (e) => {
    if (ws !== socket) return;  // stopped here: the status already says why
    S.closed = {code: e.code, reason: e.reason};
    stop();
    status(e.code === 1006 ? "Conversation closed: the connection to the server was lost."
      : `Conversation closed by the server (${e.code}): ${e.reason || "no reason given"}`);
  };
  status("Connecting…");
}

function stop() {
  const socket = ws;
  ws = null;
  if (socket && socket.readyState <= 1) socket.close(1000, "stopped by the user");
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  if (ctx) ctx.close();
  ctx = null; player = null;
  $(".cv-start").disabled = false; $(".cv-stop").disabled = true;
}

$(".cv-start").addEventListener("click", start);
$(".cv-stop").addEventListener("click", () => { stop(); status("Stopped."); });
