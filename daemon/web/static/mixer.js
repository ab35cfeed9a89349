// The browser mixer: one WebSocket to the daemon, binary OSC both ways, OSCQuery
// LISTEN for every value it shows (docs/web.md). Nothing here keeps state the
// daemon does not: every strip shows what the daemon says, whoever changed it.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const UNITY = 0.75;
  const NI_COLOURS = { drums: "#009E73", bass: "#D55E00", other: "#CC79A7", vocals: "#56B4E9" };
  const MARKS = [10, 5, 0, -5, -10, -20, -30, -40, -60];

  // --- the console taper (core/mixer/params.py) ------------------------------------
  function faderToDb(f) {
    if (f <= 0) return -Infinity;
    if (f >= 0.5) return 40 * f - 30;
    if (f >= 0.25) return 80 * f - 50;
    if (f >= 0.0625) return 160 * f - 70;
    return 480 * f - 90;
  }
  function dbToFader(db) {
    if (db >= -10) return (db + 30) / 40;
    if (db >= -30) return (db + 50) / 80;
    if (db >= -60) return (db + 70) / 160;
    return Math.max(0, (db + 90) / 480);
  }
  const dbText = (db) => (db === -Infinity || db <= -90 ? "-∞ dB" : `${db >= 0 ? "+" : ""}${db.toFixed(1)} dB`);
  const clock = (s) => {
    s = Math.max(0, s || 0);
    const m = Math.floor(s / 60);
    return `${m}:${(s - 60 * m).toFixed(1).padStart(4, "0")}`;
  };

  // --- connection ----------------------------------------------------------------------
  let ws = null;
  let retry = 500;
  const conn = $("conn");
  function setConn(state, text) {
    conn.className = `conn ${state}`;
    conn.textContent = text;
    document.body.dataset.conn = state;
  }
  function send(address, args = []) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(OSC.message(address, args));
  }
  // /state, /track/list and /scene/list answer more than they ask: the daemon takes 4
  // of them at once, then 2 a second per connection, and refuses the rest (the limits in
  // docs/osc.md). A refused one would never be answered (a saved scene missing from the
  // list), so the page paces its own: one that has to wait goes out as soon as the
  // daemon takes it again, once however often it was wanted meanwhile. The page counts
  // 1.5 a second, short of the 2, for a network that delivers two closer than they left.
  const BULK_BURST = 4;
  const BULK_PER_SECOND = 1.5;
  const bulk = { tokens: BULK_BURST, at: 0, waiting: new Set(), timer: 0 };
  function ask(address) {
    bulk.waiting.add(address);
    askWaiting();
  }
  // A refused change (the rate while a JACK transport or a MIDI clock leads it) left
  // the control where the hand put it: ask the daemon's value again, which it shows.
  function showAgain(error) {
    const address = error.split(/[: ]/, 1)[0];
    if (address === "/transport/rate" || address === "/transport/bpm") ask("/transport/rate");
  }

  function askWaiting() {
    const now = performance.now() / 1000;
    bulk.tokens = Math.min(BULK_BURST, bulk.tokens + (now - bulk.at) * BULK_PER_SECOND);
    bulk.at = now;
    for (const address of bulk.waiting) {
      if (bulk.tokens < 1) break;
      bulk.waiting.delete(address);
      bulk.tokens -= 1;
      send(address);
    }
    if (bulk.waiting.size && !bulk.timer) {
      const wait = (1 - bulk.tokens) / BULK_PER_SECOND;
      bulk.timer = setTimeout(() => { bulk.timer = 0; askWaiting(); }, 1000 * wait);
    }
  }
  function command(name, data) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ COMMAND: name, DATA: data }));
  }
  const GLOBAL_LISTENS = [
    "/master/fader", "/master/mute", "/master/filter", "/transport/playing", "/transport/position", "/transport/loop",
    "/transport/length", "/track/name", "/track/progress", "/channels", "/channels/colors",
    "/channels/labels", "/meter", "/meter/rms", "/track/grid", "/transport/beat", "/quantize",
    "/transport/rate", "/transport/keylock", "/transport/pitch", "/status",
    ...[1, 2, 3, 4, 5, 6, 7, 8].flatMap((n) => [`/cue/${n}`, `/cue/${n}/scene`]),
  ];
  function listenChannels(from, to) {
    for (let i = from; i <= to; i++) {
      for (const p of ["fader", "mute", "solo", "pan", "filter", "echo", "reverb"]) command("LISTEN", `/ch/${i}/${p}`);
    }
  }
  function connect() {
    setConn("connecting", "connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/${location.search}`);
    socket.binaryType = "arraybuffer";
    ws = socket;
    socket.onopen = () => {
      retry = 500;
      setConn("live", "live");
      // a new connection is a new sender to the daemon, with all its requests
      bulk.tokens = BULK_BURST;
      bulk.at = performance.now() / 1000;
      for (const a of GLOBAL_LISTENS) command("LISTEN", a);
      listenChannels(1, strips.length);
      ask("/state"); // then every value, whatever happened while away
      ask("/track/list");
      ask("/scene/list");
    };
    socket.onmessage = (ev) => {
      if (typeof ev.data === "string") return onCommand(JSON.parse(ev.data));
      for (const [address, args] of OSC.decode(ev.data)) onMessage(address, args);
    };
    socket.onclose = (ev) => {
      if (ws !== socket) return;
      ws = null;
      setConn("lost", ev.code === 1008 || ev.code === 1013 ? `reconnecting (${ev.reason || ev.code})` : "reconnecting");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 5000);
    };
  }
  function onCommand(msg) {
    if (msg.COMMAND === "PATH_CHANGED") ask("/state"); // /channels rebuilds the strips
    else if (msg.COMMAND === "ERROR") toast(msg.DATA);
  }

  // --- state from the daemon -------------------------------------------------------------
  const state = {
    playing: false, position: 0, length: 0, loop: [0, 0], names: [], colours: [], labels: [], separating: false,
    pending: false, // a separation under way (its stems, or the original standing in)
    stemsReady: 0, // the share of the stems' chunks in when the overview was last asked for
    grid: [0, 0, 0], beat: null, // /track/grid (bpm 0: no grid yet), /transport/beat
  };
  let strips = [];
  let master = null;
  const meters = { peak: [], rms: [] };

  function onMessage(address, args) {
    const m = /^\/ch\/(\d+)\/(fader|mute|solo|pan|filter|echo|reverb)$/.exec(address);
    if (m) {
      const s = strips[Number(m[1]) - 1];
      if (s) s.set(m[2], args[0]);
      return;
    }
    const cue = /^\/cue\/([1-8])(\/scene)?$/.exec(address);
    if (cue) {
      showCue(Number(cue[1]), cue[2] ? "scene" : "position", args[0]);
      return;
    }
    switch (address) {
      case "/quantize": showQuantize(String(args[0])); break;
      case "/master/fader": case "/master/mute": case "/master/filter":
        master.set(address.slice(8), args[0]); break;
      case "/transport/playing": state.playing = !!args[0]; drawTransport(); break;
      case "/transport/position": state.position = args[0]; drawTransport(); break;
      case "/transport/length": state.length = args[0]; drawTransport(); overviewSoon(); break;
      case "/transport/loop": state.loop = [args[0], args[1]]; drawTransport(); break;
      case "/track/name": $("track-name").textContent = args[0] || "—"; overviewSoon(); break;
      case "/track/progress": showProgress(args[0], args[1]); break;
      case "/track/grid": state.grid = args; if (!(args[0] > 0)) state.beat = null; drawTempo(); drawRate(); break;
      case "/transport/rate": rateSlider.set(Math.log2(Math.min(2, Math.max(0.5, Number(args[0]) || 1)))); break;
      case "/transport/keylock": showKeylock(!!args[0]); break;
      case "/transport/pitch": showPitch(Number(args[0]) || 0); break;
      case "/transport/beat": state.beat = args[0]; drawTempo(); break;
      case "/status": showSync(String(args[0])); break;
      case "/channels": setChannels(args.map(String)); break;
      case "/channels/colors": state.colours = args.map(String); colourStrips(); drawWaveSoon(); break;
      case "/channels/labels": state.labels = args.map(String); labelStrips(); break;
      case "/meter": meters.peak = args; break;
      case "/meter/rms": meters.rms = args; break;
      case "/track/list": fillSelect($("track-list"), args, (p) => p.split("/").pop()); break;
      case "/scene/list": fillSelect($("scene-list"), args, (n) => n); break;
      case "/scene/save": ask("/scene/list"); toast(`saved scene ${args[0]}`, true); break;
      case "/track/load": toast(`loaded ${String(args[0]).split("/").pop()}`, true); break;
      case "/error": toast(args[0]); showAgain(String(args[0])); break;
      default: break;
    }
  }

  function fillSelect(select, items, label) {
    const keep = select.value;
    if (select.id === "track-list") {
      // No track to load (the demo, an empty --library): no track picker at all.
      select.parentElement.hidden = !items.length;
      if (!items.length) { select.replaceChildren(); return; }
    } else if (!items.length) {
      const o = document.createElement("option");
      o.value = "";
      o.textContent = "no scenes";
      select.replaceChildren(o);
      return;
    }
    select.replaceChildren(...items.map((v) => {
      const o = document.createElement("option");
      o.value = v;
      o.textContent = label(v);
      return o;
    }));
    if (items.includes(keep)) select.value = keep;
  }

  // The share of the whole separation each stage stands for (core/separation/keys.py STAGES).
  const STAGES = [["stft", 0.05], ["nmf", 0.55], ["activations", 0.15], ["reconstruct", 0.25]];

  function share(stage, fraction) {
    let done = 0;
    for (const [name, weight] of STAGES) {
      if (name === stage) return done + weight * Math.min(Math.max(fraction || 0, 0), 1);
      done += weight;
    }
    return 0;  // "starting"
  }

  function showProgress(stage, fraction) {
    // "load failed": the last /track/load failed (its /error said why); the track plays on.
    const done = stage === "ready" || stage === "original only" || stage === "load failed";
    // "stems": the stems play where their chunks are separated (fraction: the share
    // ready), the original elsewhere: the strips are live, the bar shows what is ready.
    const stems = stage === "stems";
    if (state.pending && done) overviewSoon(); // the stems replace the original
    // Stems arriving chunk by chunk: the overview again as each chunk comes (the daemon
    // folds in only the new chunks), so it covers what is ready.
    if (stems && (fraction || 0) > state.stemsReady) overviewSoon();
    state.stemsReady = stems ? Math.max(state.stemsReady, fraction || 0) : 0;
    state.pending = !done;
    state.separating = !done && !stems;
    $("progress").hidden = done;
    const whole = Math.round((stems ? Math.min(Math.max(fraction || 0, 0), 1) : share(stage, fraction)) * 100);
    const own = STAGES.some(([name]) => name === stage) ? ` ${Math.round((fraction || 0) * 100)}%` : "";
    $("progress-fill").style.width = `${whole}%`;
    $("progress-text").textContent = stage === "verifying" ? "verifying"
      : stems ? `stems ${whole}% ready` : `separating ${whole}% (${stage}${own})`;
    $("strips").classList.toggle("separating", state.separating);
  }

  let toastTimer = 0;
  function toast(text, ok = false) {
    const t = $("toast");
    t.textContent = text;
    t.style.borderColor = ok ? "var(--ok)" : "";
    t.style.background = ok ? "#132d21" : "";
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  // --- strips ---------------------------------------------------------------------------
  const template = $("strip-template");

  // A vertical fader: relative drag (no jump on touch), a detent at unity, Shift or
  // the "fine" switch for a tenth of the travel, double-click/double-tap for unity.
  // Every pointer is its own: two fingers move two faders.
  const fineFactor = (e) => (e.shiftKey || $("fine").checked ? 0.1 : 1);
  const MOVED_PX = 4; // a press that moves further is a drag, not half of a double tap
  // A value from the daemon for a control this page moved less than ECHO_MS ago can be
  // the late echo of an earlier move: shown, it would throw the control back, then
  // forward again. Values that arrive while the control is held or within ECHO_MS of
  // its last move wait; the latest is shown once the control is left alone.
  const ECHO_MS = 500;

  // The daemon's values for one control: show(v) when it is free, else the latest later.
  function echoGuard(busy, show) {
    let quietUntil = 0;
    let latest = null;
    let timer = null;
    const apply = () => {
      timer = null;
      const wait = quietUntil - performance.now();
      if (busy() || wait > 0) { timer = setTimeout(apply, Math.max(wait, 0) + 20); return; }
      if (latest !== null) { const v = latest; latest = null; show(v); }
    };
    return {
      moved: () => { quietUntil = performance.now() + ECHO_MS; },
      remote: (v) => {
        latest = v;
        if (!timer) apply();
      },
    };
  }
  // onShown(v): a value from the daemon is now shown (the strip's dB label follows).
  function makeFader(el, onChange, onShown) {
    const thumb = el.querySelector(".thumb");
    const scale = el.querySelector(".scale");
    for (const db of MARKS) {
      const s = document.createElement("span");
      s.textContent = db > 0 ? `+${db}` : String(db);
      s.style.top = `${(1 - dbToFader(db)) * 100}%`;
      scale.append(s);
    }
    el.querySelector(".unity").style.top = `${(1 - UNITY) * 100}%`;
    let value = UNITY;
    let drag = null;
    let lastTap = 0;
    let stillPresses = 0; // presses in a row that did not drag: a double-click needs two
    const show = (v) => {
      thumb.style.top = `${(1 - v) * 100}%`;
      el.setAttribute("aria-valuenow", v.toFixed(3));
    };
    const guard = echoGuard(() => drag !== null, (v) => { value = v; show(v); onShown(v); });
    const move = (v) => {
      v = Math.min(1, Math.max(0, v));
      if (Math.abs(v - UNITY) < 0.012) v = UNITY; // the detent
      guard.moved();
      if (v !== value) { value = v; show(v); onChange(v); }
    };
    el.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      const now = performance.now();
      if (e.pointerType !== "mouse" && now - lastTap < 300) { lastTap = 0; move(UNITY); return; }
      lastTap = now;
      el.setPointerCapture(e.pointerId);
      el.classList.add("held");
      drag = { id: e.pointerId, y: e.clientY, y0: e.clientY, last: e.clientY, start: value, fine: fineFactor(e), moved: false };
    });
    el.addEventListener("pointermove", (e) => {
      if (!drag || e.pointerId !== drag.id) return;
      const fine = fineFactor(e);
      if (fine !== drag.fine) {
        // Shift or the switch changed mid-drag: go on from here at the new rate,
        // not from where the drag began (that would make the fader jump).
        drag.start = value;
        drag.y = drag.last;
        drag.fine = fine;
      }
      drag.last = e.clientY;
      if (Math.abs(e.clientY - drag.y0) >= MOVED_PX) drag.moved = true;
      const h = el.clientHeight || 1;
      // Out of the detent only by moving past it: a held thumb near unity stays there.
      move(drag.start + ((drag.y - e.clientY) / h) * fine);
    });
    const end = (e) => {
      if (drag && e.pointerId === drag.id) {
        if (drag.moved) lastTap = 0; // a drag then a tap is no double tap
        stillPresses = drag.moved ? 0 : stillPresses + 1;
        drag = null;
        el.classList.remove("held");
      }
    };
    el.addEventListener("pointerup", end);
    el.addEventListener("pointercancel", end);
    // The browser counts two quick clicks as a double-click even when they were drags:
    // two quick nudges must not throw the fader back to unity.
    el.addEventListener("dblclick", () => { if (stillPresses >= 2) move(UNITY); });
    el.addEventListener("keydown", (e) => {
      const step = e.shiftKey ? 0.002 : 0.02;
      if (e.key === "ArrowUp") { move(value + step); e.preventDefault(); }
      if (e.key === "ArrowDown") { move(value - step); e.preventDefault(); }
    });
    show(value);
    return {
      held: () => drag !== null,
      set: guard.remote,
    };
  }

  // A horizontal slider from lo to hi (pan and filter -1..1, an echo send 0..1) with a
  // detent at 0, which a double-click (that did not drag) returns it to. Options:
  // `detentPx` a detent that many pixels of travel wide at the drag's rate (a tenth of
  // it fine) instead of 1.5 % of the range; `label(v)` its aria-valuenow; `shown(v)`
  // called with every value shown, the page's own or the daemon's.
  function makeSlider(el, lo, hi, onChange, opts = {}) {
    const thumb = el.querySelector(".pan-thumb");
    const label = opts.label || ((v) => v.toFixed(2));
    const shown = opts.shown || (() => {});
    let value = 0;
    let drag = null;
    let stillPresses = 0;
    const show = (v) => {
      thumb.style.left = `${((v - lo) / (hi - lo)) * 100}%`;
      el.setAttribute("aria-valuenow", label(v));
      shown(v);
    };
    const guard = echoGuard(() => drag !== null, (v) => { value = v; show(v); });
    const move = (v, fine = 1) => {
      v = Math.min(hi, Math.max(lo, v));
      const detent = opts.detentPx ? (opts.detentPx / (el.clientWidth || 1)) * (hi - lo) * fine : 0.015 * (hi - lo);
      if (Math.abs(v) < detent) v = 0; // the detent: exactly 0 (a filter is off)
      guard.moved();
      if (v !== value) { value = v; show(v); onChange(v); }
    };
    el.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      el.setPointerCapture(e.pointerId);
      drag = { id: e.pointerId, x: e.clientX, x0: e.clientX, last: e.clientX, start: value, fine: fineFactor(e), moved: false };
    });
    el.addEventListener("pointermove", (e) => {
      if (!drag || e.pointerId !== drag.id) return;
      const fine = fineFactor(e);
      if (fine !== drag.fine) { drag.start = value; drag.x = drag.last; drag.fine = fine; } // as the fader
      drag.last = e.clientX;
      if (Math.abs(e.clientX - drag.x0) >= MOVED_PX) drag.moved = true;
      move(drag.start + ((e.clientX - drag.x) / (el.clientWidth || 1)) * (hi - lo) * fine, fine);
    });
    const end = (e) => {
      if (drag && e.pointerId === drag.id) {
        stillPresses = drag.moved ? 0 : stillPresses + 1;
        drag = null;
      }
    };
    el.addEventListener("pointerup", end);
    el.addEventListener("pointercancel", end);
    el.addEventListener("dblclick", () => { if (stillPresses >= 2) move(0); });
    show(0);
    return { set: guard.remote, reset: () => move(0) };
  }

  // One strip: `base` is its OSC address (/ch/2 or /master). Sends at most one value
  // per animation frame per control, the latest.
  function makeStrip(base, name, withSoloPan) {
    const root = template.content.firstElementChild.cloneNode(true);
    root.querySelector(".name").textContent = name;
    root.dataset.address = base;
    const dbLabel = root.querySelector(".db");
    const pending = {};
    let scheduled = false;
    const flush = () => {
      scheduled = false;
      for (const [k, v] of Object.entries(pending)) send(`${base}/${k}`, [v]);
      for (const k of Object.keys(pending)) delete pending[k];
    };
    const queue = (k, v) => {
      pending[k] = v;
      if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
    };
    let level = UNITY; // the fader as shown, for the overview's gains
    const fader = makeFader(
      root.querySelector(".fader"),
      (v) => { level = v; dbLabel.textContent = dbText(faderToDb(v)); queue("fader", v); drawWaveSoon(); },
      (v) => { level = v; dbLabel.textContent = dbText(faderToDb(v)); root.dataset.fader = Number(v).toFixed(4); drawWaveSoon(); },
    );
    const muteBtn = root.querySelector(".mute");
    const soloBtn = root.querySelector(".solo");
    let muted = false;
    let soloed = false;
    // A press toggles what the page last asked for, not what feedback last showed: a
    // second press before the first one's feedback arrives must undo it, not repeat it.
    const toggleMute = () => { muted = !muted; send(`${base}/mute`, [{ i: muted ? 1 : 0 }]); };
    muteBtn.addEventListener("click", toggleMute);
    let pan = null;
    let echo = null;
    let reverb = null;
    // The DJ filter: left low-pass, right high-pass, centre off (the master has one too).
    const filter = makeSlider(root.querySelector(".filter"), -1, 1, (v) => queue("filter", v));
    if (withSoloPan) {
      soloBtn.addEventListener("click", () => send(`${base}/solo`, [{ i: soloed ? 0 : 1 }]));
      pan = makeSlider(root.querySelector(".pan"), -1, 1, (v) => queue("pan", v));
      echo = makeSlider(root.querySelector(".echo"), 0, 1, (v) => queue("echo", v));
      reverb = makeSlider(root.querySelector(".reverb"), 0, 1, (v) => queue("reverb", v));
    } else {
      soloBtn.remove();
      root.querySelector(".pan").style.visibility = "hidden";
      root.querySelector(".echo").style.visibility = "hidden";
      root.querySelector(".reverb").style.visibility = "hidden";
      root.classList.add("master");
    }
    const canvas = root.querySelector(".meter");
    const strip = {
      root,
      canvas,
      get soloed() { return soloed; },
      get muted() { return muted; },
      get gain() { const db = faderToDb(level); return db <= -90 ? 0 : 10 ** (db / 20); },
      toggleMute,
      set(param, v) {
        if (param === "fader") fader.set(v); // shown when the fader is left alone (echoGuard)
        else if (param === "mute") { muted = !!v; muteBtn.classList.toggle("on", muted); root.dataset.mute = muted ? "1" : "0"; drawSolo(); }
        else if (param === "solo") { soloed = !!v; soloBtn.classList.toggle("on", soloed); root.dataset.solo = soloed ? "1" : "0"; drawSolo(); }
        else if (param === "pan" && pan) pan.set(v);
        else if (param === "filter") filter.set(v);
        else if (param === "echo" && echo) echo.set(v);
        else if (param === "reverb" && reverb) reverb.set(v);
      },
    };
    return strip;
  }

  function drawSolo() {
    const any = strips.some((s) => s.soloed);
    for (const s of strips) s.root.classList.toggle("silenced", s.muted || (any && !s.soloed));
    drawWaveSoon();
  }

  function setChannels(names) {
    if (names.join("\u0000") === state.names.join("\u0000") && strips.length) return;
    const before = strips.length;
    state.names = names;
    const box = $("strips");
    box.replaceChildren();
    strips = names.map((n, i) => makeStrip(`/ch/${i + 1}`, n, true));
    for (const s of strips) box.append(s.root);
    box.append(master.root);
    colourStrips();
    labelStrips();
    overviewSoon();
    if (names.length > before) listenChannels(before + 1, names.length);
    ask("/state"); // values of the new strips
  }

  // The file's own stem names ("Vox") label the strips; the key (/ch/vocals) is the tooltip.
  function labelStrips() {
    const n = strips.length;
    strips.forEach((s, i) => {
      const name = s.root.querySelector(".name");
      name.textContent = state.labels.length === n ? state.labels[i] : state.names[i];
      name.title = `/ch/${state.names[i]}`;
    });
  }

  function colourStrips() {
    const n = strips.length;
    strips.forEach((s, i) => {
      let c = state.colours.length === n ? state.colours[i] : NI_COLOURS[state.names[i].toLowerCase()];
      if (!c) c = `hsl(${(n < 2 ? 0 : i / (n - 1)) * 280}, 75%, 55%)`;
      s.root.style.setProperty("--colour", c);
    });
  }

  // --- meters at the display's rate, from the last /meter and /meter/rms ----------------
  const METER_TOP = 6;
  const METER_BOTTOM = -60;
  const level = (db) => Math.min(1, Math.max(0, (db - METER_BOTTOM) / (METER_TOP - METER_BOTTOM)));
  function drawMeters() {
    const all = [...strips, master];
    all.forEach((s, i) => {
      const c = s.canvas;
      const g = c.getContext("2d");
      const h = c.height;
      const w = c.width;
      g.clearRect(0, 0, w, h);
      const peak = meters.peak[i] ?? -120;
      const rms = meters.rms[i] ?? -120;
      const r = level(rms) * h;
      g.fillStyle = "#30a46c";
      g.fillRect(0, h - r, w, r);
      const p = level(peak) * h;
      g.fillStyle = peak > 0 ? "#e5484d" : peak > -6 ? "#f5d90a" : "#a6e3b8";
      g.fillRect(0, h - p, w, 2);
      g.fillStyle = "#ffffff30";
      g.fillRect(0, h - level(0) * h, w, 1);
    });
    requestAnimationFrame(drawMeters);
  }

  // --- the track overview: each channel's peaks (GET /_mixer/overview, docs/web.md), --------
  // stacked from the centre line in the strips' colours at their gains, so a muted stem
  // leaves the picture and a soloed one is all of it. Fetched again when the track or its
  // channels change; drawn again when a gain, mute, solo or the size changes.
  const overview = { data: null, timer: 0, tries: 0, frame: 0, scale: 1 };
  function overviewSoon() {
    clearTimeout(overview.timer);
    overview.timer = setTimeout(fetchOverview, 300);
  }
  async function fetchOverview() {
    let data = null;
    try {
      const r = await fetch(`/_mixer/overview${location.search}`, { cache: "no-store" });
      if (r.ok) data = await r.json();
    } catch (e) { data = null; }
    // The original while the stems are made has one channel ("mix"); anything else must
    // name the strips, or it is from a moment ago: asked again, a few times.
    const fits = data && Array.isArray(data.peaks) && (data.names.join("\u0000") === state.names.join("\u0000")
      || (data.names.length === 1 && data.names[0] === "mix"));
    if (!fits) {
      if (overview.tries++ < 5) overview.timer = setTimeout(fetchOverview, 1000);
      return;
    }
    overview.tries = 0;
    overview.data = data;
    let top = 0; // the loudest stack at unity: the full height
    for (let b = 0; b < data.bins; b++) {
      let sum = 0;
      for (const row of data.peaks) sum += row[b];
      top = Math.max(top, sum);
    }
    overview.scale = top > 0 ? 1 / top : 0;
    drawWaveSoon();
  }
  function drawWaveSoon() {
    if (!overview.frame) overview.frame = requestAnimationFrame(drawWave);
  }
  function drawWave() {
    overview.frame = 0;
    const c = $("wave");
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * ratio));
    const h = Math.max(1, Math.round(c.clientHeight * ratio));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    const data = overview.data;
    if (!data || !data.bins) return;
    const mix = data.names.length === 1 && data.names[0] === "mix";
    const any = strips.some((s) => s.soloed);
    const rows = data.peaks.map((row, i) => {
      const s = mix ? master : strips[i];
      const silent = !s || s.muted || (!mix && any && !s.soloed);
      const colour = mix ? "#8a90a0" : (s && s.root.style.getPropertyValue("--colour")) || "#8a90a0";
      return { row, gain: silent ? 0 : s.gain, colour };
    });
    const mid = h / 2;
    for (let x = 0; x < w; x++) {
      const b0 = Math.floor((x / w) * data.bins);
      const b1 = Math.max(b0 + 1, Math.floor(((x + 1) / w) * data.bins));
      let y = 0;
      for (const { row, gain, colour } of rows) {
        if (gain <= 0) continue;
        let peak = 0;
        for (let b = b0; b < b1; b++) peak = Math.max(peak, row[b]);
        const part = Math.min(1, peak * gain * overview.scale) * mid;
        if (part <= 0) continue;
        g.fillStyle = colour;
        g.fillRect(x, mid - y - part, 1, part);
        g.fillRect(x, mid + y, 1, part);
        y += part;
      }
    }
  }
  window.addEventListener("resize", drawWaveSoon);
  // On a short screen (a phone in landscape) the strips take the height below the
  // transport, whatever it wrapped to, and the pickers follow below the fold.
  const SHORT = window.matchMedia("(max-height: 520px)");
  function fitStrips() {
    const box = $("strips");
    if (!SHORT.matches) { box.style.removeProperty("--strips-height"); return; }
    const top = box.getBoundingClientRect().top + window.scrollY;
    box.style.setProperty("--strips-height", `${Math.max(0, Math.floor(window.innerHeight - top - 8))}px`);
  }
  window.addEventListener("resize", fitStrips);
  SHORT.addEventListener("change", fitStrips);

  // --- transport --------------------------------------------------------------------------
  function drawTransport() {
    $("play").textContent = state.playing ? "❚❚" : "▶";
    $("play").classList.toggle("on", state.playing);
    document.body.dataset.playing = state.playing ? "1" : "0";
    $("time").textContent = `${clock(state.position)} / ${clock(state.length).replace(/\.\d$/, "")}`;
    const len = state.length || 1;
    $("posfill").style.width = `${Math.min(100, (state.position / len) * 100)}%`;
    const [a, b] = state.loop;
    const zone = $("loopzone");
    zone.hidden = !(b > a);
    zone.style.left = `${(a / len) * 100}%`;
    zone.style.width = `${((b - a) / len) * 100}%`;
  }
  // "128.0 BPM  bar 12 . 3": the grid's tempo, then the play head's bar and beat in it
  function drawTempo() {
    const [bpm, , perBar] = state.grid;
    let text = bpm > 0 ? `${bpm.toFixed(1)} BPM` : "— BPM";
    if (bpm > 0 && perBar > 0 && typeof state.beat === "number") {
      const bar = Math.floor(state.beat / perBar) + 1;
      const beat = Math.floor(((state.beat % perBar) + perBar) % perBar) + 1;
      text += `  bar ${bar} . ${beat}`;
    }
    $("tempo").textContent = text;
  }
  // "sync link 126.00 BPM -0.1 ms 1 peer": who leads, as the status line says it (its
  // "sync ..." part: the leader's tempo, the phase error, Link's peers); hidden when off
  function showSync(status) {
    const part = status.split(" | ").find((p) => p.startsWith("sync ")) || "";
    const el = $("sync");
    if (el.textContent !== part) el.textContent = part;
    el.hidden = !part;
  }
  // --- rate, keylock, pitch -------------------------------------------------------------------
  // The rate slider moves in octaves (log2 of the rate, -1..1): 1.00 in its middle, 0.5 and
  // 2 at its ends. The page sends the rate to four decimals; the button beside it shows
  // the change in % and, with a beat grid, the tempo it plays at, and resets it to 1.00.
  const speed = { rate: 1, keylock: false, pitch: 0 };
  const RATE_DETENT_PX = 1.5;
  const rateOf = (v) => Math.min(2, Math.max(0.5, Math.round(2 ** v * 10000) / 10000));
  function drawRate() {
    const pct = (speed.rate - 1) * 100;
    let text = `${pct >= 0 ? (pct > 0 ? "+" : "±") : ""}${pct.toFixed(1)} %`;
    const bpm = state.grid[0];
    if (bpm > 0) text += `  ${(bpm * speed.rate).toFixed(1)} BPM`;
    $("rate-reset").textContent = text;
    $("rate").dataset.rate = String(speed.rate);
  }
  const rateSlider = makeSlider($("rate"), -1, 1, (v) => send("/transport/rate", [rateOf(v)]), {
    detentPx: RATE_DETENT_PX,
    label: (v) => rateOf(v).toFixed(4),
    shown: (v) => { speed.rate = rateOf(v); drawRate(); },
  });
  $("rate-reset").addEventListener("click", () => rateSlider.reset());
  // A press acts on what the page last asked for (as a mute does), not on late feedback.
  function showKeylock(on) {
    speed.keylock = on;
    $("keylock").classList.toggle("on", on);
    $("keylock").setAttribute("aria-pressed", on ? "true" : "false");
  }
  $("keylock").addEventListener("click", () => {
    speed.keylock = !speed.keylock;
    send("/transport/keylock", [{ i: speed.keylock ? 1 : 0 }]);
  });
  // The pitch shift in semitones (-12..12): a semitone a press, a tenth with Shift or fine.
  function showPitch(p) {
    speed.pitch = p;
    const text = String(Number(p.toFixed(2)));
    $("pitch-reset").textContent = `${p > 0 ? "+" : ""}${text} st`;
    $("pitch-reset").dataset.pitch = text;
  }
  function pitchBy(e, sign) {
    const p = Math.round((speed.pitch + sign * fineFactor(e)) * 100) / 100;
    speed.pitch = Math.min(12, Math.max(-12, p));
    send("/transport/pitch", [speed.pitch]);
  }
  $("pitch-down").addEventListener("click", (e) => pitchBy(e, -1));
  $("pitch-up").addEventListener("click", (e) => pitchBy(e, 1));
  $("pitch-reset").addEventListener("click", () => { speed.pitch = 0; send("/transport/pitch", [0]); });
  showKeylock(false);
  showPitch(0);

  // --- quantize, loops in beats, hot cues -----------------------------------------------------
  function showQuantize(mode) {
    const select = $("quantize");
    if (![...select.options].some((o) => o.value === mode)) {
      const o = document.createElement("option");
      o.value = mode;
      o.textContent = `${mode} beats`;
      select.append(o);
    }
    select.value = mode;
  }
  $("quantize").addEventListener("change", (e) => send("/quantize", [e.target.value]));
  for (const b of $("loop-beats").querySelectorAll("button")) {
    b.addEventListener("click", () => send("/transport/loop/beats", [Number(b.dataset.beats)]));
  }
  // A pad: empty, a click sets the cue; set, a click jumps there; right-click or a long
  // press (the browser's context menu) clears it.
  const cues = [];
  for (let n = 1; n <= 8; n++) {
    const pad = document.createElement("button");
    pad.className = "btn small cue";
    pad.textContent = String(n);
    const cue = { pad, position: -1, scene: "" };
    pad.addEventListener("click", () => send(`/cue/${n}/${cue.position >= 0 ? "jump" : "set"}`));
    pad.addEventListener("contextmenu", (e) => { e.preventDefault(); send(`/cue/${n}/clear`); });
    cues.push(cue);
    $("cues").append(pad);
  }
  function showCue(n, what, value) {
    const cue = cues[n - 1];
    if (what === "scene") cue.scene = String(value);
    else cue.position = Number(value);
    const set = cue.position >= 0;
    cue.pad.classList.toggle("set", set);
    cue.pad.dataset.position = set ? cue.position.toFixed(3) : "";
    cue.pad.title = set
      ? `cue ${n} at ${clock(cue.position)}${cue.scene ? `, scene ${cue.scene}` : ""}: jump (right-click: clear)`
      : `cue ${n}: set at the play head`;
  }
  for (let n = 1; n <= 8; n++) showCue(n, "position", -1);

  // A phone in portrait keeps the beats row behind this toggle (mixer.css); elsewhere the
  // toggle is not shown and the row always is.
  $("beats-toggle").addEventListener("click", () => {
    const open = $("beats").classList.toggle("open");
    $("beats-toggle").classList.toggle("on", open);
    $("beats-toggle").setAttribute("aria-expanded", open ? "true" : "false");
    $("beats-toggle").textContent = `rate · loops · cues ${open ? "▾" : "▸"}`;
  });

  $("grid-tap").addEventListener("click", () => send("/track/grid/tap"));
  $("grid-halve").addEventListener("click", () => send("/track/grid/halve"));
  $("grid-double").addEventListener("click", () => send("/track/grid/double"));
  let loopIn = null;
  $("play").addEventListener("click", () => send("/transport/toggle"));
  $("stop").addEventListener("click", () => send("/transport/stop"));
  $("posbar").addEventListener("pointerdown", (e) => {
    const r = e.currentTarget.getBoundingClientRect();
    if (state.length > 0) send("/transport/seek", [((e.clientX - r.left) / r.width) * state.length]);
  });
  $("loop-in").addEventListener("click", () => {
    loopIn = state.position;
    $("loop-in").classList.add("on");
  });
  $("loop-out").addEventListener("click", () => {
    const start = loopIn ?? state.loop[0];
    if (state.position <= start) { toast("loop out must come after loop in"); return; }
    send("/transport/loop", [start, state.position]);
    loopIn = null;
    $("loop-in").classList.remove("on");
  });
  $("loop-off").addEventListener("click", () => { loopIn = null; $("loop-in").classList.remove("on"); send("/transport/loop/off"); });

  // --- track and scenes ---------------------------------------------------------------------
  $("track-load").addEventListener("click", () => {
    const path = $("track-list").value;
    if (path) send("/track/load", [path]);
  });
  $("scene-recall").addEventListener("click", () => {
    const name = $("scene-list").value;
    const fade = Math.max(0, Math.min(600, Number($("morph").value) || 0));
    if (name) send("/scene/recall", [name, fade]);
  });
  $("scene-save").addEventListener("click", () => {
    const name = $("scene-name").value.trim();
    if (name) send("/scene/save", [name]);
  });

  // --- keyboard: space play/pause, 1-9 mute --------------------------------------------------
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === " ") { e.preventDefault(); send("/transport/toggle"); }
    else if (/^[1-9]$/.test(e.key)) {
      const s = strips[Number(e.key) - 1];
      if (s) s.toggleMute();
    }
  });

  master = makeStrip("/master", "master", false);
  $("strips").append(master.root);
  fitStrips();
  requestAnimationFrame(drawMeters);
  connect();
})();
