"""The harness in Locust's web UI: a "Harness" tab (Locust's extended tabs/tables) that shows
the current test's checks, gates, error codes and CPU while it runs and its verdict after;
``/harness`` (the same, with links), ``/harness/live`` (JSON), each finished test's files
under ``/harness/runs/<run_id>/<path>``; the Host field shows the embedded target's URL.

Routes live on ``environment.web_ui.app`` and use the web UI's own authentication. Only
files inside a finished test's folder are served (no path traversal, no symlinks out).
"""
from __future__ import annotations

import html
import logging
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.runner.plugin import HarnessPlugin, TestRun

log = logging.getLogger("harness")

TAB_KEY = "harness"
#: the options the start form sends that the harness reads itself (Locust keeps only the
#: first value of a multiple select, and splits list values on commas)
FORM_KEYS = ("chat_scenario", "chat_set", "chat_policy", "chat_config", "chat_no_report")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class HarnessWeb:
    def __init__(self, plugin: "HarnessPlugin", web_ui: Any) -> None:
        self.plugin = plugin
        self.web_ui = web_ui
        self.env = plugin.env
        self.error: str | None = None
        if getattr(plugin, "embedded_url", None) and not self.env.host:
            self.env.host = plugin.embedded_url  # the Host field shows it; no "no host" warning
        ta = web_ui.template_args
        ta["extended_tabs"] = [{"title": "Harness", "key": TAB_KEY}]
        ta["extended_tables"] = [{"key": TAB_KEY, "structure": [
            # not "name": Locust's tables sort by a "name" column; these rows keep their order
            {"key": "group", "title": "Section"}, {"key": "item", "title": "Name"},
            {"key": "value", "title": "Value"}, {"key": "detail", "title": "Detail"}]}]
        ta["extended_csv_files"] = [
            {"href": "./harness", "title": "Harness: live view, verdicts, each test's report and files"},
            {"href": "./harness/report/latest", "title": "Harness: the last finished test's report.html"}]
        self._wrap_template_args()
        self._routes(web_ui.app)

    # ------------------------------------------------------------------ the start form
    def _wrap_template_args(self) -> None:
        web_ui = self.web_ui
        orig = web_ui.update_template_args

        def update() -> None:
            orig()
            extra = web_ui.template_args.get("extra_options") or {}
            opt = extra.get("chat_set")
            if opt is not None and isinstance(opt.get("default_value"), list):
                opt["default_value"] = shlex.join(opt["default_value"])  # Locust would show "a,b"
            elif opt is not None and opt.get("default_value") is None:
                opt["default_value"] = ""

        web_ui.update_template_args = update

    def capture_form(self, form: Any) -> None:
        """Keep the harness options of a /swarm form as sent (before Locust coerces them)."""
        values: dict[str, Any] = {}
        for key in FORM_KEYS:
            if key not in form:
                continue
            got = [v for v in form.getlist(key)]
            if key == "chat_scenario":
                names = [p.strip() for v in got for p in str(v).split(",") if p.strip()]
                values[key] = ",".join(names)
            elif key == "chat_no_report":
                values[key] = str(got[-1]).lower() in ("true", "on", "1", "yes") if got else False
            elif key == "chat_set":
                values[key] = " ".join(str(v) for v in got if str(v).strip()) or None
            else:
                values[key] = str(got[-1]) if got else ""
        if "chat_no_report" not in form and form:
            values["chat_no_report"] = False  # an unchecked checkbox is not sent
        self.plugin.form = values

    # ------------------------------------------------------------------ data
    def run_by_id(self, run_id: str) -> "TestRun | None":
        runs = [r for r in self.plugin.runs if r.finished]
        if run_id == "latest":
            return runs[-1] if runs else None
        return next((r for r in runs if r.run_id == run_id), None)

    def live(self) -> dict[str, Any]:
        p = self.plugin
        runner = p.runner
        out: dict[str, Any] = {"state": getattr(runner, "state", None), "error": self.error, "host": self.env.host,
                               "role": p.role, "run": None,
                               "runs": [self._run_brief(r) for r in reversed(p.runs)]}
        run = p.run
        if run is not None:
            out["run"] = self._run_view(run)
        return out

    def _run_brief(self, run: "TestRun") -> dict[str, Any]:
        base = f"harness/runs/{run.run_id}/"
        d: dict[str, Any] = {"run_id": run.run_id, "seq": run.seq, "finished": run.finished,
                             "verdict": self._verdict(run), "exit_code": run.exit_code,
                             "files": base if run.finished else None,
                             "report": base + "report.html" if run.finished and run.report else None}
        if run.summary:
            d["duration_s"] = run.summary.get("duration_s")
        return d

    @staticmethod
    def _verdict(run: "TestRun") -> str:
        if not run.finished:
            return "finishing" if run.stopping else "running"
        if run.exit_code is None:
            return "unknown (the end-of-test pipeline failed)"
        return "PASS" if run.exit_code == 0 else f"FAIL (exit {run.exit_code})"

    def _cpu_live(self, run: "TestRun") -> dict[str, Any]:
        p = self.plugin
        stats = run.cpu.stats() if run.cpu is not None else {}
        gens: dict[str, Any] = {}
        if p.role == "master":
            for n in p.nodes.values():
                samples = n.get("cpu") or []
                if samples:
                    from harness.runner.live import cpu_stats

                    gens[n["name"]] = cpu_stats(samples)
                elif n.get("cpu_last") is not None:
                    gens[n["name"]] = {"last": n["cpu_last"]}
        elif "local" in stats:
            gens["local"] = stats["local"]
        out = {"generators": gens, "target": stats.get("target")}
        if run.summary and isinstance(run.summary.get("cpu"), dict):
            out["summary"] = run.summary["cpu"]
        return out

    def _run_view(self, run: "TestRun") -> dict[str, Any]:
        now = run.stopped_ns or time.time_ns()
        view = self._run_brief(run)
        view["started_ns"] = run.started_ns
        view["elapsed_s"] = (now - run.started_ns) / 1e9
        if run.live is not None:
            view.update(run.live.snapshot(now))
        if run.summary:  # after the test: what summary.json says (the authoritative result)
            from harness.protocol import code_short

            view["gates"] = run.summary.get("gates") or {}
            view["codes"] = [{"code": int(c), "name": code_short(int(c)), "count": n}
                             for c, n in sorted((run.summary.get("codes") or {}).items(), key=lambda kv: -kv[1])]
            view["ops"] = run.summary.get("ops") or view.get("ops")
            view["duration_s"] = run.summary.get("duration_s")
        view["cpu"] = self._cpu_live(run)
        t = getattr(self.plugin.rt, "target", None)
        view["target"] = {"url": getattr(self.plugin, "embedded_url", None) or self.env.host,
                          "embedded": t is not None, "sessions_online": view.get("sessions_online")}
        return view

    def rows(self) -> list[dict[str, str]]:
        """The Harness tab's table: one row per fact (section, name, value, detail)."""
        data = self.live()
        out: list[dict[str, str]] = []

        def row(section: str, name: str, value: Any, detail: Any = "") -> None:
            out.append({"group": section, "item": name, "value": _fmt(value), "detail": _fmt(detail) if detail != "" else ""})

        if data.get("error"):
            row("error", "form", data["error"])
        run = data.get("run")
        if run is None:
            row("test", "state", "no test yet", "press Start")
            return out
        row("test", "verdict", run["verdict"], f"run {run['run_id']} (test #{run['seq']})")
        row("test", "elapsed", f"{run.get('duration_s') or run['elapsed_s']:.1f} s", f"{run.get('rows', 0)} journal rows")
        if run.get("report"):
            row("test", "report", run["report"], "also on the Download Data tab and at ./harness")
        if run.get("files"):
            row("test", "files", run["files"])
        final = "final" if run.get("checks_final") else "so far"
        for name, c in (run.get("checks") or {}).items():
            ex = (c.get("examples") or [{}])[0].get("kind", "") if c.get("examples") else ""
            row("check", name, c.get("violations"), f"violations {final}" + (f"; first: {ex}" if ex else ""))
        for name, g in (run.get("gates") or {}).items():
            row("gate", name, g.get("value"), f"limit {_fmt(g.get('limit'))}: {'pass' if g.get('passed') else 'FAIL'}"
                + (f" ({g['note']})" if g.get("note") else ""))
        for c in run.get("codes") or []:
            row("code", c["name"], c["count"])
        cpu = run.get("cpu") or {}
        for name, s in (cpu.get("generators") or {}).items():
            if s:
                row("cpu", f"generator {name}", f"{_fmt(s.get('last'))} %",
                    f"mean {_fmt(s.get('mean'))} % p95 {_fmt(s.get('p95'))} % max {_fmt(s.get('max'))} %")
        if cpu.get("target"):
            s = cpu["target"]
            row("cpu", "embedded target", f"{_fmt(s.get('last'))} %",
                f"mean {_fmt(s.get('mean'))} % p95 {_fmt(s.get('p95'))} % max {_fmt(s.get('max'))} %")
        for note in (cpu.get("summary") or {}).get("notes") or ():
            row("cpu", "note", note)
        tgt = run.get("target") or {}
        if tgt.get("embedded"):
            row("target", "sessions online", tgt.get("sessions_online"), tgt.get("url"))
        return out

    # ------------------------------------------------------------------ routes
    def _routes(self, app: Any) -> None:
        from flask import Response, abort, jsonify, redirect, request, send_file

        auth = self.web_ui.auth_required_if_enabled
        me = self

        @app.before_request
        def _capture_swarm() -> None:
            if request.path.rstrip("/").endswith("/stats/reset"):
                # Reset zeroes Locust's counts, not the test's journal: remember what it had
                run = me.plugin.run
                if run is not None and not run.finished:
                    run.locust_offset += int(me.plugin.runner.stats.total.num_requests)
                return
            if request.method == "POST" and request.path.rstrip("/").endswith("/swarm"):
                try:
                    me.capture_form(request.form)
                except Exception:  # pragma: no cover - never break the start button
                    log.exception("reading the start form")

        @app.after_request
        def _extend_stats(response: Any) -> Any:
            if request.path.rstrip("/").endswith("/stats/requests") and response.is_json:
                try:
                    import json

                    data = response.get_json()
                    data["extended_stats"] = [{"key": TAB_KEY, "data": me.rows()}]
                    response.set_data(json.dumps(data))
                except Exception:  # pragma: no cover
                    log.exception("harness tab")
            return response

        @app.route("/harness/live")
        @auth
        def harness_live() -> Any:
            from harness.results.summary import json_safe

            return jsonify(json_safe(me.live()))

        @app.route("/harness")
        @app.route("/harness/")
        @auth
        def harness_page() -> Any:
            return Response(PAGE, mimetype="text/html")

        @app.route("/harness/report/latest")
        @auth
        def harness_latest() -> Any:
            run = me.run_by_id("latest")
            if run is None:
                abort(404)
            return redirect(f"../runs/{run.run_id}/report.html")

        @app.route("/harness/runs/<run_id>/")
        @auth
        def harness_files(run_id: str) -> Any:
            run = me.run_by_id(run_id)
            if run is None:
                abort(404)
            root = Path(run.run_dir).resolve()
            items = []
            for p in sorted(root.rglob("*")):
                if p.is_file() and not p.name.startswith(".") and _inside(root, p):
                    rel = p.relative_to(root).as_posix()
                    items.append(f'<li><a href="{html.escape(rel)}">{html.escape(rel)}</a> ({p.stat().st_size} bytes)</li>')
            body = (f"<!doctype html><meta charset=utf-8><title>{html.escape(run.run_id)}</title>"
                    f"<h1>{html.escape(run.run_id)}</h1><p>{html.escape(me._verdict(run))}</p><ul>{''.join(items)}</ul>")
            return Response(body, mimetype="text/html")

        @app.route("/harness/runs/<run_id>/<path:path>")
        @auth
        def harness_file(run_id: str, path: str) -> Any:
            run = me.run_by_id(run_id)
            if run is None:
                abort(404)
            target = safe_path(Path(run.run_dir), path)
            if target is None:
                abort(404)
            return send_file(target)


def _inside(root: Path, p: Path) -> bool:
    try:
        p.resolve().relative_to(root)
        return True
    except (ValueError, OSError):
        return False


def safe_path(run_dir: Path, rel: str) -> Path | None:
    """``run_dir/rel`` when that is a regular file inside ``run_dir`` (after resolving ``..``
    and symlinks) and no part of ``rel`` is hidden (``.master-token``); else None."""
    if not rel or "\\" in rel or "\x00" in rel:
        return None
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." or p.startswith(".") for p in parts):
        return None
    root = run_dir.resolve()
    target = (root.joinpath(*parts)).resolve()
    if not _inside(root, target) or not target.is_file():
        return None
    return target


PAGE = r"""<!doctype html>
<html><head><meta charset="utf-8"><title>Harness</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:14px}
th{background:#f3f3f3}.pass{color:#15803d;font-weight:700}.fail{color:#b91c1c;font-weight:700}
h2{margin:.8em 0 .2em;font-size:18px}
</style></head><body>
<h1>Chat login harness</h1>
<p><a href="../">&larr; Locust</a> &middot; updates every 2 s</p>
<div id="current">loading...</div>
<h2>Tests of this process</h2><div id="runs"></div>
<script>
const BASE=location.pathname.replace(/\/harness\/?$/,'')+'/';
function esc(s){return String(s==null?'-':s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]))}
function num(v){return (typeof v==='number')?(Math.round(v*100)/100):esc(v)}
function cls(v){return /^PASS/.test(v)?'pass':(/^FAIL/.test(v)?'fail':'')}
function table(head, rows){return '<table><tr>'+head.map(h=>'<th>'+esc(h)+'</th>').join('')+'</tr>'+rows.map(r=>'<tr>'+r.map(c=>'<td>'+c+'</td>').join('')+'</tr>').join('')+'</table>'}
async function tick(){
  try{
    const d=await (await fetch(BASE+'harness/live',{cache:'no-store'})).json();
    let h='';
    if(d.error){h+='<p class="fail">'+esc(d.error)+'</p>'}
    const r=d.run;
    if(!r){h+='<p>No test yet: press Start in Locust.</p>'}
    else{
      h+='<h2 id="verdict">Test '+esc(r.run_id)+': <span class="'+cls(r.verdict)+'">'+esc(r.verdict)+'</span></h2>';
      h+='<p>'+num(r.duration_s||r.elapsed_s)+' s, '+esc(r.rows)+' journal rows';
      if(r.report){h+=' &middot; <a id="report-link" href="'+esc(r.report)+'">report.html</a>'}
      if(r.files){h+=' &middot; <a id="files-link" href="'+esc(r.files)+'">files</a>'}
      h+='</p>';
      h+='<h2>Checks ('+(r.checks_final?'final':'so far')+')</h2>'+table(['check','violations','first example'],Object.entries(r.checks||{}).map(([k,c])=>[esc(k),'<span class="'+(c.violations?'fail':'pass')+'">'+esc(c.violations)+'</span>',esc(c.examples&&c.examples[0]?JSON.stringify(c.examples[0]).slice(0,200):'')]));
      h+='<h2>Gates</h2>'+table(['gate','value','limit','passed'],Object.entries(r.gates||{}).map(([k,g])=>[esc(k),num(g.value),num(g.limit),'<span class="'+(g.passed?'pass':'fail')+'">'+(g.passed?'pass':'FAIL')+'</span>'+(g.note?' '+esc(g.note):'')]));
      h+='<h2>Codes</h2>'+table(['code','count'],(r.codes||[]).map(c=>[esc(c.name),esc(c.count)]));
      const cpu=r.cpu||{};const cr=[];
      for(const [k,s] of Object.entries(cpu.generators||{})){if(s)cr.push(['generator '+esc(k),num(s.last),num(s.mean),num(s.p95),num(s.max)])}
      if(cpu.target){const s=cpu.target;cr.push(['embedded target',num(s.last),num(s.mean),num(s.p95),num(s.max)])}
      h+='<h2>CPU (% of one core)</h2>'+table(['process','now','mean','p95','max'],cr);
      if(cpu.summary&&cpu.summary.notes){h+=cpu.summary.notes.map(n=>'<p class="fail">'+esc(n)+'</p>').join('')}
      if(r.target&&r.target.embedded){h+='<p>Embedded target '+esc(r.target.url)+': sessions online '+esc(r.target.sessions_online)+'</p>'}
    }
    document.getElementById('current').innerHTML=h;
    document.getElementById('runs').innerHTML=table(['#','run','verdict','report','files'],(d.runs||[]).map(x=>[esc(x.seq),esc(x.run_id),'<span class="'+cls(x.verdict)+'">'+esc(x.verdict)+'</span>',x.report?'<a href="'+esc(BASE+x.report)+'">report.html</a>':'-',x.files?'<a href="'+esc(BASE+x.files)+'">files</a>':'-']));
  }catch(e){document.getElementById('current').textContent='(no answer: '+e+')'}
}
tick();setInterval(tick,2000);
</script></body></html>
"""
