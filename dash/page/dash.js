// shoal's dashboard and performance report: one script for both.
// Live: frames arrive by server-sent events (see shoal-dash's frame.rs for
// their shape). Report: one object with the whole run, drawn once.
"use strict";
const shoal = (() => {
  const WINDOW_S = 10;      // seconds of task stream shown live
  const MAX_BARS = 3000;    // bars drawn at most: the page stays smooth at any task rate
  const ROW_H = 16;
  const LABEL_W = 150;
  const UNKNOWN_THREAD = 4294967295;
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
                   "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
  const colors = new Map();
  const names = new Map();  // func -> name
  let runs = [];            // [func, worker, thread, start_s, stop_s, nbytes, outcome]
  let next = 0;

  const $ = id => document.getElementById(id);
  const esc = s => String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c]));
  const colorOf = name => {
    if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length]);
    return colors.get(name);
  };
  const bytes = n => {
    const u = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  };
  const secs = s => s < 1e-3 ? (s * 1e6).toFixed(0) + " µs" : s < 1 ? (s * 1e3).toFixed(1) + " ms" : s.toFixed(2) + " s";
  const nameOf = func => names.get(func) || "?";
  const rowOf = r => r[2] === UNKNOWN_THREAD ? "worker " + r[1] : "worker " + r[1] + " · thread " + r[2];

  function ingest(f) {
    for (const [func, name] of f.names) names.set(func, name);
    let rs = f.runs;
    if (f.from < next) rs = rs.slice(Math.min(rs.length, next - f.from));
    next = Math.max(next, f.next);
    for (const r of rs) runs.push(r);
    const cut = f.now - WINDOW_S;
    let drop = 0;
    while (drop < runs.length && runs[drop][4] < cut) drop++;
    drop = Math.max(drop, runs.length - MAX_BARS);
    if (drop > 0) runs = runs.slice(drop);
  }

  function drawStream(list, t0, t1) {
    const el = $("stream");
    const rows = [...new Set(list.map(rowOf))].sort((a, b) => a.localeCompare(b, undefined, {numeric: true}));
    const index = new Map(rows.map((k, i) => [k, i]));
    const width = Math.max(el.clientWidth || 0, 600);
    const span = Math.max(t1 - t0, 1e-6);
    const x = t => LABEL_W + (t - t0) / span * (width - LABEL_W - 8);
    const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${rows.length * ROW_H + 4}">`];
    rows.forEach((k, i) => parts.push(`<text class="rowlabel" x="4" y="${i * ROW_H + 12}">${esc(k)}</text>`));
    let bars = 0;
    for (const r of list) {
      if (r[4] < t0) continue;
      const name = nameOf(r[0]);
      const x0 = x(Math.max(r[3], t0));
      const w = Math.max(x(r[4]) - x0, 1);
      const fill = r[6] === 1 ? "#d62728" : colorOf(name);
      parts.push(`<rect class="bar" data-name="${esc(name)}" x="${x0.toFixed(1)}" y="${index.get(rowOf(r)) * ROW_H + 2}" ` +
                 `width="${w.toFixed(1)}" height="${ROW_H - 4}" fill="${fill}"><title>${esc(name)} ${secs(r[4] - r[3])}</title></rect>`);
      bars++;
    }
    parts.push("</svg>");
    el.innerHTML = parts.join("");
    el.dataset.bars = bars;
    el.dataset.rows = rows.length;
    $("legend").innerHTML = [...colors.entries()].map(([n, c]) => `<span><i style="background:${c}"></i>${esc(n)}</span>`).join("");
  }

  function drawProgress(progress) {
    // [name, done, running, queued, erred, in_memory]
    $("progress").tBodies[0].innerHTML = progress.map(([name, done, running, queued, erred]) => {
      const total = Math.max(done + running + queued + erred, 1);
      const seg = (n, c) => `<span style="width:${(100 * n / total).toFixed(1)}%;background:${c}"></span>`;
      return `<tr class="progress-row" data-name="${esc(name)}" data-done="${done}" data-running="${running}" ` +
             `data-queued="${queued}" data-erred="${erred}"><td>${esc(name)}</td>` +
             `<td><div class="pbar">${seg(done, colorOf(name))}${seg(running, "#999")}${seg(erred, "#d62728")}</div></td>` +
             `<td>${done}</td><td>${running}</td><td>${queued}</td><td>${erred}</td></tr>`;
    }).join("");
  }

  function drawWorkers(workers, store) {
    // [id, pid, threads, running, rss, cpu_percent, host], sorted by machine
    const hosts = new Set(workers.map(w => w[6] || ""));
    const rows = [...workers].sort((a, b) => (a[6] || "").localeCompare(b[6] || "") || a[0] - b[0]);
    $("workers").tBodies[0].innerHTML = rows.map(([id, pid, threads, running, rss, cpu, host]) =>
      `<tr class="worker-row" data-worker="${id}" data-host="${esc(host || "")}"><td>${id}</td>` +
      `<td>${esc(host || "this machine")}</td><td>${pid}</td><td>${threads}</td><td>${running}</td>` +
      `<td>${bytes(rss)}</td><td>${cpu.toFixed(0)} %</td></tr>`).join("");
    const machines = workers.length ? `${workers.length} workers on ${hosts.size} machine${hosts.size === 1 ? "" : "s"}. ` : "";
    $("store").textContent = machines + (store
      ? `store: ${bytes(store.memory)} in memory, ${bytes(store.spilled)} spilled` +
        (store.limit ? ` (limit ${bytes(store.limit)})` : "")
      : "");
  }

  function drawCards(cards) {
    $("totals").innerHTML = cards.map(([label, value, id]) =>
      `<div class="card" id="${id}"><b>${esc(value)}</b>${esc(label)}</div>`).join("");
  }

  // Tasks per second over time (uPlot).
  const series = {t: [], rate: [], moved: []};
  let chart = null;
  function drawChart(t, rate, moved) {
    series.t.push(t); series.rate.push(rate); series.moved.push(moved);
    const keep = 240;  // a minute of samples
    if (series.t.length > keep) for (const k in series) series[k].splice(0, series[k].length - keep);
    const data = [series.t, series.rate, series.moved];
    if (!chart) {
      chart = new uPlot({
        width: Math.max($("chart").clientWidth || 0, 600), height: 180,
        scales: {x: {time: false}},
        series: [{label: "s"}, {label: "tasks/s", stroke: "#4e79a7", width: 2},
                 {label: "bytes moved/s", stroke: "#f28e2b", scale: "b"}],
        axes: [{}, {}, {scale: "b", side: 1, grid: {show: false}}],
      }, data, $("chart"));
    } else {
      chart.setData(data);
    }
  }

  // One frame: the first one comes with the page (so that it paints at
  // once, before its load event), the next ones by the event stream.
  let frames = 0;
  function frame(f) {
      frames++;
      ingest(f);
      drawStream(runs, f.now - WINDOW_S, f.now);
      drawProgress(f.progress);
      drawWorkers(f.workers, f.store);
      const t = f.totals;
      drawCards([["tasks done", t.done, "done"], ["failed", t.failed, "failed"], ["live tasks", t.live, "live"],
                 ["tasks/s", t.tasks_per_s.toFixed(0), "rate"], ["bytes moved", bytes(t.transferred), "moved"],
                 ["scheduler events/s", t.events_per_s.toFixed(0), "events"]]);
      drawChart(f.now, t.tasks_per_s, t.transferred_per_s);
      $("status").textContent = "live · " + frames + " frames";
      document.body.dataset.frames = frames;
  }

  function live() {
    const es = new EventSource("events" + location.search);
    es.onmessage = e => frame(JSON.parse(e.data));
    es.onerror = () => { $("status").textContent = "disconnected (retrying)"; };
  }

  // A performance report: the whole run (or its last runs, see `shown`).
  function report(d) {
    for (const [func, name] of d.names) names.set(func, name);
    $("status").textContent = d.title;
    const t0 = d.runs.length ? Math.min(...d.runs.map(r => r[3])) : d.start;
    drawStream(d.runs, t0, Math.max(d.stop, t0));
    drawProgress(d.per_name.map(([name, done, failed]) => [name, done, 0, 0, failed, 0]));
    drawWorkers(d.workers, d.store);
    const dur = Math.max(d.stop - d.start, 1e-9);
    drawCards([["duration", secs(dur), "duration"], ["tasks done", d.totals.done, "done"],
               ["failed", d.totals.failed, "failed"], ["tasks/s", (d.totals.done / dur).toFixed(0), "rate"],
               ["bytes moved", bytes(d.totals.transferred), "moved"],
               ["runs drawn", d.runs.length + " of " + d.total_runs, "drawn"]]);
    $("chart-title").textContent = "Time per task name";
    const rows = d.per_name.map(([name, done, failed, busy, nbytes]) =>
      `<tr class="time-row" data-name="${esc(name)}"><td>${esc(name)}</td><td>${done}</td><td>${failed}</td>` +
      `<td>${secs(busy)}</td><td>${secs(busy / Math.max(done + failed, 1))}</td><td>${bytes(nbytes)}</td></tr>`);
    $("chart").innerHTML = `<table><thead><tr><th>task</th><th>done</th><th>failed</th><th>total time</th>` +
      `<th>mean</th><th>result bytes</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
  }

  return {frame, live, report};
})();
