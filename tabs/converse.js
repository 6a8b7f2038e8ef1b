// The Conversation tab's page code (run by gr.HTML's js_on_load: `element` is the tab's box).
// Microphone -> AudioWorklet -> 20 ms int16 frames -> WebSocket (s2s/serve/converse.py's protocol);
// reply PCM <- WebSocket -> a player AudioWorklet with a small jitter buffer. One AudioContext
// clocks both, so the page can time speech end -> first sound itself; window.s2sConverse
// keeps those times for scripts/converse_browser.py.
const box = element;
const $ = (sel) => box.querySelector(sel);
const RATE = 24000, FRAME = 480, PREBUFFER = 480;  // 20 ms frames; play once 20 ms are queued
const WORKLETS = `
class Mic extends AudioWorkletProcessor {
  constructor() { super(); this.started = false; }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch && ch.length) {
      if (!this.started) { this.started = true; this.port.postMessage({type: "start", time: currentTime}); }
      this.port.postMessage({type: "pcm", data: ch.slice(0)});
    }
    return true;
  }
}
class Player extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; this.offset = 0; this.queued = 0; this.turn = -1; this.playing = false;
    this.sounding = false; this.flushed = null; this.ended = false;
    this.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === "audio") {
        if (m.turn !== this.turn) { this.turn = m.turn; this.sounding = false; this.playing = false; this.ended = false; }
        this.queue.push(m.data); this.queued += m.data.length;
      } else if (m.type === "end") { if (m.turn === this.turn) this.ended = true; }
      else if (m.type === "flush") { this.queue = []; this.offset = 0; this.queued = 0; this.playing = false; this.flushed = m.turn; }
    };
  }
  process(inputs, outputs) {
    const out = outputs[0];
    const n = out[0].length;
    if (!this.playing && (this.queued >= ${PREBUFFER} || (this.ended && this.queued > 0))) this.playing = true;
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

const S = window.s2sConverse = {captureStart: null, turns: {}, closed: null, ready: null, sent: 0, errors: []};
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
  if (m.type === "ready") { S.ready = m; status(`Listening. Talk; a pause of ${m.end_silence_ms} ms ends your turn.`); startMic(); }
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
  const source = ctx.createMediaStreamSource(stream);
  const mic = new AudioWorkletNode(ctx, "s2s-mic", {numberOfOutputs: 1, outputChannelCount: [1]});
  const mute = ctx.createGain(); mute.gain.value = 0;
  mic.port.onmessage = (e) => {
    if (e.data.type === "start") S.captureStart = e.data.time;
    else sendFrames(e.data.data);
  };
  source.connect(mic); mic.connect(mute); mute.connect(ctx.destination);
}

async function start() {
  if (ws) return;
  $(".cv-start").disabled = true; $(".cv-stop").disabled = false;
  S.turns = {}; S.closed = null; S.captureStart = null; S.sent = 0; cancelled = new Set(); pending = new Float32Array(0);
  $(".cv-turns tbody").innerHTML = "";
  try {
    ctx = new AudioContext({sampleRate: RATE, latencyHint: "interactive"});
    const url = URL.createObjectURL(new Blob([WORKLETS], {type: "application/javascript"}));
    await ctx.audioWorklet.addModule(url);
    player = new AudioWorkletNode(ctx, "s2s-player", {numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1]});
    player.port.onmessage = onPlayer;
    player.connect(ctx.destination);
    await ctx.resume();
    S.outputLatency = (ctx.baseLatency || 0) + (ctx.outputLatency || 0);
  } catch (e) { S.errors.push(String(e)); status(`Audio is not available in this browser: ${e}`); stop(); return; }
  const url = new URL("converse/ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => ws.send(JSON.stringify({type: "start", sample_rate: ctx.sampleRate}));
  ws.onmessage = onMessage;
  ws.onclose = (e) => {
    S.closed = {code: e.code, reason: e.reason};
    if (e.code !== 1000 || e.reason) status(`Conversation closed (${e.code}): ${e.reason || "connection lost"}`);
    stop();
  };
  status("Connecting…");
}

function stop() {
  if (ws && ws.readyState <= 1) ws.close(1000, "stopped by the user");
  ws = null;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  if (ctx) ctx.close();
  ctx = null;
  $(".cv-start").disabled = false; $(".cv-stop").disabled = true;
}

$(".cv-start").addEventListener("click", start);
$(".cv-stop").addEventListener("click", () => { stop(); status("Stopped."); });
