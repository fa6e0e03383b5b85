"""The whole-path benchmark's printed table: each figure through chatsite beside the same load direct, the ratio
between them, and issue 14's goal (the figures themselves come from bench/whole_path.py)."""

from __future__ import annotations

LOAD_TITLES = {
    "paced": "paced {replies} x {tokens} at {pace:g} tokens/s",
    "unpaced_1x1000": "unpaced {replies} x {tokens} ({rounds} rounds)",
    "unpaced_50x200": "unpaced {replies} x {tokens}",
    "unpaced_200x100": "unpaced {replies} x {tokens}",
}
# Issue 14's goals, for the full-size loads: (tokens/s share of direct, TTFT p50 goal text).
GOALS = {
    "paced": (">= 90% of direct", "<= direct + 150 ms"),
    "unpaced_1x1000": (">= 60% of direct", "<= direct + 10 ms"),
    "unpaced_50x200": (">= 45% of direct", "<= 2x direct"),
    "unpaced_200x100": (">= 40% of direct", "<= 2x direct"),
}


def _n(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:,}{unit}"


def _ms(value: float | None, limit: float | None = None) -> str:
    if value is None:
        return f"> {limit:g} s" if limit else "-"
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{value:.1f} ms"


def _finished(s: dict) -> str:
    if "crash" in s:
        return f"crashed: {s['crash']}"
    if s["finished"] == s["planned"]:
        text = f"{s['finished']}/{s['planned']} in {s['seconds']:.1f} s"
    else:
        text = f"did not finish: {s['finished']} of {s['planned']} replies in {s['seconds']:.0f} s"
    return text + (f", {s['errors']} errors" if s["errors"] else "")


def _share(chatsite, direct) -> str:
    return f"{100 * chatsite / direct:.0f}%" if chatsite is not None and direct else "-"


def _added(chatsite, direct) -> str:
    if chatsite is None or direct is None:
        return "-"
    ratio = f", {chatsite / direct:.1f}x" if direct > 0 else ""
    return f"+{_ms(chatsite - direct)}{ratio}"


def load_rows(name: str, f: dict) -> list[tuple[str, ...]]:
    shape, d, c = f["shape"], f["direct"], f["chatsite"]
    title = LOAD_TITLES.get(name, name).format(**shape)
    if "crash" in d or "crash" in c:
        return [(title, "load", _finished(d), _finished(c), "", "")]
    rate_goal, ttft_goal = GOALS.get(name, ("-", "-"))
    return [
        (title, "replies", _finished(d), _finished(c), "", "all, 0 errors"),
        ("", "tokens/s delivered", _n(d["tokens_per_s"]), _n(c["tokens_per_s"]),
         _share(c["tokens_per_s"], d["tokens_per_s"]), rate_goal),
        ("", "TTFT p50", _ms(d["ttft_p50_ms"], d["limit"]), _ms(c["ttft_p50_ms"], c["limit"]),
         _added(c["ttft_p50_ms"], d["ttft_p50_ms"]), ttft_goal),
        ("", "TTFT p99", _ms(d["ttft_p99_ms"], d["limit"]), _ms(c["ttft_p99_ms"], c["limit"]),
         _added(c["ttft_p99_ms"], d["ttft_p99_ms"]), "-"),
    ]  # fmt: skip


def inflight_rows(f: dict, worker_role: str) -> list[tuple[str, ...]]:
    shape, d, c = f["shape"], f["direct"], f["chatsite"]
    title = f"{shape['replies']:,} paced replies in flight ({shape['tokens']} tokens at {shape['pace']:g}/s)"
    if "crash" in c:
        return [(title, "load", _finished(d), _finished(c), "", "")]
    plateau = c.get("sampled") or {}
    idle = f["idle"]
    db = plateau.get("db") or {}
    db_text = f"{sum(db.values())} ({', '.join(f'{k} {v}' for k, v in sorted(db.items()))})" if db else "-"
    idle_db = f"idle {sum(idle['db'].values())}"
    worker_db = db.get(worker_role)
    pool = f.get("pool_size")
    rss = f.get("worker_rss_kib_per_reply")
    return [
        (title, "replies", _finished(d), _finished(c), "", f"{shape['replies']:,}, 0 errors"),
        ("", "in flight at the plateau", _n(d["planned"]), f"{_n(plateau.get('streaming'))} streaming",
         f"{plateau.get('worker_processes', '-')} {worker_role} processes", f"{shape['replies']:,} in one process"),
        ("", f"{worker_role} RSS per reply in flight", "-", _n(rss, " KiB"), "", "<= 256 KiB"),
        ("", "DB connections at the plateau", "-", db_text, idle_db,
         f"{worker_role} <= pool size ({pool})" if worker_db is None or pool is None else
         f"{worker_role} {worker_db} <= pool size ({pool})"),
        ("", "Redis connections at the plateau", "-", _n(plateau.get("redis")), f"idle {idle['redis']}", "-"),
        ("", "tokens/s delivered", _n(d["tokens_per_s"]), _n(c["tokens_per_s"]),
         _share(c["tokens_per_s"], d["tokens_per_s"]), "-"),
        ("", "TTFT p50", _ms(d["ttft_p50_ms"], d["limit"]), _ms(c["ttft_p50_ms"], c["limit"]),
         _added(c["ttft_p50_ms"], d["ttft_p50_ms"]), "-"),
    ]  # fmt: skip


def cpu_rows(f: dict) -> list[tuple[str, ...]]:
    loads = [k for k in f if k.endswith("_tokens")]
    shapes = " and ".join(f"{f[k].get('planned', '?')} x {k.split('_')[0]}" for k in loads)
    worker, web, standin = f.get("worker"), f.get("web"), f.get("standin")
    if worker is None:
        return [(f"CPU ({shapes} unpaced)", "could not be solved", "-", "; ".join(_finished(f[k]) for k in loads),
                 "", "")]  # fmt: skip
    s_token = f"{standin['us_per_token']} us (stand-in)" if standin else "-"
    return [
        (f"CPU ({shapes} unpaced)", "worker CPU per token", s_token, f"{worker['us_per_token']} us", "",
         "<= 25 us"),
        ("", "worker CPU per reply, apart from tokens", "-", f"{worker['ms_per_reply']} ms", "", "<= 5 ms"),
        ("", "web CPU per token / per reply", "-", f"{web['us_per_token']} us / {web['ms_per_reply']} ms"
         if web else "-", "", "-"),
    ]  # fmt: skip


def send_rows(f: dict) -> list[tuple[str, ...]]:
    send, floor = f["send"], f["floor"]
    return [
        (f"{send['requests']} sends, streams not read", "web CPU per send, p50 (mean)", "-",
         f"{send['web_cpu_ms_p50']} ms ({send['web_cpu_ms_mean']})", f"statuses {send['statuses']}", "-"),
        ("", "web CPU per GET /api/auth/me, p50 (mean)", "-",
         f"{floor['web_cpu_ms_p50']} ms ({floor['web_cpu_ms_mean']})", "", "-"),
        ("", "the send's own work, p50 (difference)", "-", f"{f['send_minus_floor_ms_p50']} ms", "",
         "<= 5 ms (the POST view)"),
    ]  # fmt: skip


NOTES = """\
Direct: the load generator streams the stand-in server itself; chatsite: the same requests' replies through
chatsite (login, POST /api/chats/<id>/messages/stream, SSE), the same stand-in behind it, in the same run.
tokens/s: every token received / the time from the first send to the last token (per round). TTFT: from the
send to the first text received; a reply cut off before any text counts as longer than the time limit.
CPU figures are the roles' process trees' CPU clocks, with each process's idle CPU taken off: per token and
per reply solve cpu = replies x per_reply + tokens x per_token over the two loads. Web CPU per send: N sends one
after another, each on a new connection, closed once the response's headers arrive (the stream is never read),
the web processes' CPU (every thread, to the ns) from each request to 20 ms after it: the connection, HTTP,
middleware (session, CSRF, user), the view (checks, one transaction, the enqueue) and opening and closing the
relay. GET /api/auth/me is the same connection and middleware with no view work: the difference of the p50s is
the send's own work."""


def print_report(figures: dict, args) -> None:
    rows: list[tuple[str, ...]] = [("load", "figure", "direct", "chatsite", "chatsite vs direct", "goal")]
    for name in LOAD_TITLES:
        if name in figures:
            rows += load_rows(name, figures[name])
    if "inflight" in figures:
        rows += inflight_rows(figures["inflight"], args.worker_role)
    if "cpu" in figures:
        rows += cpu_rows(figures["cpu"])
    if "send" in figures:
        rows += send_rows(figures["send"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\nWhole path: chatsite as the Procfile starts it ({', '.join(figures.get('roles', {}))}) against the same "
          f"stand-in server streamed directly{' (--quick sizes)' if args.size == 'quick' else ''}")  # fmt: skip
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(NOTES)
