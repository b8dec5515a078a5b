// Tiny canvas charts: time-series lines and labelled bars. No dependencies.
//
//   const c = new LineChart(canvas, {title: "online", series: [{name: "total", color: "#4fc3f7"}]});
//   c.push(Date.now(), {total: 42});      // appends a point per series, redraws
//   c.setData([[t, {total: 1}], ...]);    // replaces everything
//
//   const b = new BarChart(canvas, {title: "funnel"});
//   b.set([{label: "viewers", value: 120}, {label: "buyers", value: 14}]);

const PALETTE = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176", "#4db6ac", "#f06292"];

function setup(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width;
  const h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function short(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
  if (a > 0 && a < 10 && !Number.isInteger(v)) return v.toFixed(1);
  return String(Math.round(v));
}

export class LineChart {
  constructor(canvas, { title = "", series = [], windowMs = 300000, format = short, stepped = false } = {}) {
    this.canvas = canvas;
    this.title = title;
    this.series = series.map((s, i) => ({ color: PALETTE[i % PALETTE.length], ...s }));
    this.windowMs = windowMs;
    this.format = format;
    this.points = []; // [t, {name: value}]
    this.stepped = stepped;
    this.draw();
  }

  ensureSeries(name) {
    if (!this.series.find((s) => s.name === name)) {
      this.series.push({ name, color: PALETTE[this.series.length % PALETTE.length] });
    }
  }

  setData(points) {
    this.points = points.slice();
    this.draw();
  }

  push(t, values) {
    this.points.push([t, values]);
    const cut = t - this.windowMs;
    while (this.points.length > 2 && this.points[0][0] < cut) this.points.shift();
    this.draw();
  }

  draw() {
    const { ctx, w, h } = setup(this.canvas);
    const padL = 42, padR = 8, padT = 20, padB = 18;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#cfd8dc";
    ctx.fillText(this.title, padL, 13);
    const pts = this.points;
    const now = pts.length ? pts[pts.length - 1][0] : Date.now();
    const t0 = now - this.windowMs;
    let max = 0;
    for (const [, v] of pts) for (const s of this.series) max = Math.max(max, Number(v[s.name]) || 0);
    max = niceMax(max);
    const X = (t) => padL + ((t - t0) / this.windowMs) * (w - padL - padR);
    const Y = (v) => h - padB - (v / max) * (h - padT - padB);
    // grid
    ctx.strokeStyle = "#37474f";
    ctx.lineWidth = 1;
    ctx.fillStyle = "#90a4ae";
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      const y = Math.round(Y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(padL, y);
      ctx.lineTo(w - padR, y);
      ctx.stroke();
      ctx.fillText(this.format(v), 2, y + 4);
    }
    const mins = Math.round(this.windowMs / 60000);
    ctx.fillText(mins >= 120 ? `-${Math.round(mins / 60)} h` : `-${mins} min`, padL, h - 4);
    ctx.fillText("now", w - padR - 22, h - 4);
    // lines: the first series is drawn last, on top (the total over its parts)
    for (const s of [...this.series].reverse()) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      let started = false;
      let lastY = null;
      for (const [t, v] of pts) {
        if (t < t0 || v[s.name] === undefined || v[s.name] === null) continue;
        const x = X(t), y = Y(Number(v[s.name]));
        if (!started) ctx.moveTo(x, y);
        else if (this.stepped && lastY !== null) {
          ctx.lineTo(x, lastY);
          ctx.lineTo(x, y);
        } else ctx.lineTo(x, y);
        started = true;
        lastY = y;
      }
      ctx.stroke();
    }
    // legend with the latest values
    let lx = padL + ctx.measureText(this.title).width + 14;
    const last = pts.length ? pts[pts.length - 1][1] : {};
    for (const s of this.series) {
      const label = `${s.label || s.name} ${last[s.name] === undefined ? "" : this.format(Number(last[s.name]))}`;
      ctx.fillStyle = s.color;
      ctx.fillRect(lx, 5, 8, 8);
      ctx.fillStyle = "#cfd8dc";
      ctx.fillText(label, lx + 11, 13);
      lx += ctx.measureText(label).width + 22;
    }
  }
}

export class BarChart {
  constructor(canvas, { title = "", format = short, colors = PALETTE } = {}) {
    this.canvas = canvas;
    this.title = title;
    this.format = format;
    this.colors = colors;
    this.bars = [];
    this.draw();
  }

  set(bars) {
    this.bars = bars;
    this.draw();
  }

  draw() {
    const { ctx, w, h } = setup(this.canvas);
    const padT = 20, padB = 18, padX = 8;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#cfd8dc";
    ctx.fillText(this.title, padX, 13);
    const n = Math.max(1, this.bars.length);
    const max = niceMax(Math.max(0, ...this.bars.map((b) => Number(b.value) || 0)));
    const slot = (w - 2 * padX) / n;
    const bw = Math.max(6, slot * 0.6);
    // a long series (days) whose labels would run into each other: every k-th one only (the
    // last one always); a few categories keep every label
    const widest = Math.max(...this.bars.map((b) => ctx.measureText(String(b.label)).width));
    const every = n > 8 ? Math.max(1, Math.ceil((widest + 6) / slot)) : 1;
    this.bars.forEach((b, i) => {
      const v = Number(b.value) || 0;
      const bh = (v / max) * (h - padT - padB - 12);
      const x = padX + i * slot + (slot - bw) / 2;
      const y = h - padB - bh;
      ctx.fillStyle = b.color || this.colors[i % this.colors.length];
      ctx.fillRect(x, y, bw, bh);
      ctx.fillStyle = "#eceff1";
      const val = this.format(v);
      ctx.fillText(val, x + bw / 2 - ctx.measureText(val).width / 2, y - 3);
      ctx.fillStyle = "#90a4ae";
      if ((n - 1 - i) % every !== 0) return;
      const lab = String(b.label);
      ctx.fillText(lab, x + bw / 2 - ctx.measureText(lab).width / 2, h - 4);
    });
  }
}

/** A small line chart with its scale (host console's comments/s): the top value and 0 on
 * the left, how far back it reaches and "now" underneath. ``stepS``: seconds per value. */
export function sparkline(canvas, values, color = "#4fc3f7", stepS = 1) {
  const { ctx, w, h } = setup(canvas);
  if (!values.length) return;
  const max = niceMax(Math.max(...values));
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillStyle = "#90a4ae";
  const top = String(Number.isInteger(max) ? max : max.toFixed(1));
  const left = Math.max(ctx.measureText(top).width, ctx.measureText("0").width) + 4;
  const bottom = 12; // the time axis
  ctx.fillText(top, 0, 9);
  ctx.fillText("0", 0, h - bottom);
  const span = Math.round((values.length - 1) * stepS);
  ctx.fillText(span >= 60 ? `-${Math.round(span / 60)} min` : `-${span} s`, left, h - 1);
  ctx.fillText("now", w - ctx.measureText("now").width, h - 1);
  ctx.strokeStyle = "#37474f";
  ctx.beginPath();
  ctx.moveTo(left, h - bottom - 1);
  ctx.lineTo(w, h - bottom - 1);
  ctx.stroke();
  const pw = w - left - 2;
  const ph = h - bottom - 4;
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = left + (i / Math.max(1, values.length - 1)) * pw + 1;
    const y = h - bottom - 2 - (v / max) * ph;
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  });
  ctx.stroke();
}
