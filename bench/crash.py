"""One crash run of bench/crash: a steady load of single jobs beside a running batch, Postgres
killed and restarted under it, then the four counts that must be 0 (see bench/crash).

Standard library only (plus the psql client), so it runs wherever the bench does.
"""

import argparse
import json
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

TERMINAL = "('succeeded', 'failed', 'cancelled')"
CLIENTS = 8
BATCH_ITEMS = 3000
LOAD_BEFORE_CRASH = 8.0
DOWN_FOR = 3.0
LOAD_AFTER_RESTART = 10.0
SETTLE_TIMEOUT = 180.0


def call(method, url, token=None, body=None, timeout=15.0):
    """(status, parsed JSON or None); status 0 when the request itself failed."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return 0, None


def sql(database_url, query):
    out = subprocess.run(
        ["psql", database_url, "-tAq", "-c", query], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def shell(command, as_postgres):
    argv = shlex.split(command)
    if as_postgres:
        argv = ["runuser", "-u", "postgres", "--"] + argv
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def model_calls(sim):
    status, stats = call("GET", f"{sim}/_sim/stats")
    if status != 200:
        sys.exit(f"provider-sim's stats: {status}")
    return stats["calls"].get("/api/generate", 0)


class Load:
    """Clients submitting one job after another until stopped; the ids of the accepted ones."""

    def __init__(self, url, token):
        self.url, self.token = url, token
        self.accepted, self.refused, self.failed = [], 0, 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(n,)) for n in range(CLIENTS)]

    def client(self, n):
        sent = 0
        while not self.stop.is_set():
            body = {"model": "llama3", "prompt": f"crash load {n} {sent}"}
            status, job = call("POST", f"{self.url}/v1/generate", self.token, body)
            sent += 1
            with self.lock:
                if status == 202:
                    self.accepted.append(job["id"])
                elif status == 0:
                    self.failed += 1
                else:
                    self.refused += 1
            if status != 202:
                time.sleep(0.05)
            else:
                time.sleep(0.02)

    def start(self):
        for thread in self.threads:
            thread.start()

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join()


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--url", "--token", "--sim", "--crash", "--restart", "--database-url"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--as-postgres", default="no")
    args = parser.parse_args()
    as_postgres = args.as_postgres == "yes"
    calls_before = model_calls(args.sim)

    items = [{"custom_id": f"i{n}", "prompt": f"crash item {n}"} for n in range(BATCH_ITEMS)]
    status, batch = call(
        "POST",
        f"{args.url}/v1/batches",
        args.token,
        {"kind": "generate", "model": "llama3", "items": items},
        timeout=60,
    )
    if status != 202:
        sys.exit(f"the batch was not accepted: {status}")
    load = Load(args.url, args.token)
    load.start()
    time.sleep(LOAD_BEFORE_CRASH)

    crash_at = time.time()
    shell(args.crash, as_postgres)
    time.sleep(DOWN_FOR)
    shell(args.restart, as_postgres)
    back_at = time.time()
    time.sleep(max(0.0, back_at + 2.0 - time.time()))
    stuck_ids = sql(
        args.database_url,
        f"select id from jobs where status = 'running' and started_at < to_timestamp({crash_at})",
    ).split()
    stuck = len(stuck_ids)
    time.sleep(max(0.0, back_at + LOAD_AFTER_RESTART - time.time()))
    load.finish()

    deadline = time.time() + SETTLE_TIMEOUT
    while time.time() < deadline:
        open_jobs = int(sql(args.database_url, "select count(*) from jobs where finished_at is null"))
        batch_open = sql(
            args.database_url, f"select finished_at is null from batches where id = '{batch['id']}'"
        )
        if open_jobs == 0 and batch_open == "f":
            break
        time.sleep(1)
    settled = time.time() - back_at

    rows = sql(args.database_url, f"select id, status in {TERMINAL} from jobs where batch_id is null")
    ended = {line.split("|")[0]: line.split("|")[1] == "t" for line in rows.splitlines() if line}
    lost_single = sum(1 for id in load.accepted if not ended.get(id, False))
    lost_items = int(
        sql(
            args.database_url,
            f"select {BATCH_ITEMS} - count(*) filter (where status in {TERMINAL}) from jobs "
            f"where batch_id = '{batch['id']}'",
        )
    )
    twice, overcounted = sql(
        args.database_url,
        "select (select count(*) from (select job_id from usage_records group by job_id "
        "having count(*) > 1) d), "
        "(select coalesce(sum(requests), 0) from usage_daily) - (select count(*) from usage_records)",
    ).split("|")
    attempts = int(sql(args.database_url, "select count(*) from job_attempts"))
    calls = model_calls(args.sim) - calls_before
    uncalled = max(0, attempts - calls)
    abandoned = int(
        sql(args.database_url, "select count(*) from job_attempts where outcome = 'abandoned'")
    )
    # Jobs written whose request was answered with an error (the commit's answer lost and the
    # retry refused too): they run, but their client was told to submit them again.
    unacknowledged = sum(1 for id in ended if id not in set(load.accepted))
    called_twice = sql(
        args.database_url,
        "select count(*) from (select job_id from job_attempts group by job_id "
        "having count(*) > 1) d",
    )
    lost = lost_single + lost_items
    billed_twice = int(twice) + max(0, int(overcounted))
    print(
        f"accepted {len(load.accepted)} single jobs ({load.refused} refused, {load.failed} "
        f"unanswered) and a {BATCH_ITEMS}-item batch; Postgres down "
        f"{back_at - crash_at:.1f} s; all settled {settled:.1f} s after it was back; "
        f"{attempts} attempt rows ({abandoned} abandoned-run estimates), {calls} provider calls; "
        f"{unacknowledged} jobs written but answered with an error, {called_twice} jobs called "
        f"more than once"
    )
    if stuck_ids:
        ids = ", ".join(f"'{id}'" for id in stuck_ids)
        print("still running 2 s after Postgres was back (times in s from its return):")
        print(
            sql(
                args.database_url,
                f"select j.id, j.batch_id is not null as bulk, j.claims, j.retries, j.status, "
                f"round(extract(epoch from j.finished_at)::numeric - {back_at}, 2) as ended, "
                f"(select string_agg(round(extract(epoch from a.started_at)::numeric - {back_at}, 2)"
                f"::text || ' ' || a.outcome, ', ' order by a.id) from job_attempts a "
                f"where a.job_id = j.id) as calls from jobs j where j.id in ({ids})",
            )
        )
    print(f"lost={lost} billed_twice={billed_twice} uncalled={uncalled} stuck={stuck}")
    if lost or billed_twice or uncalled or stuck:
        sys.exit(1)


if __name__ == "__main__":
    main()
