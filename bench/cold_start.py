#!/usr/bin/env python3
"""The first webhook after a cold start, as Lambda runs it: each release bootstrap, and the
Python peer, under AWS's Runtime Interface Emulator (RIE) with the function's process (only it)
held to a Lambda memory size's share of one CPU, reaching DynamoDB and SNS over HTTPS.

    python3 bench/cold_start.py [--memory 128,256,512] [--runs 7] [--warm 30] [--idle-warm 10]
                                [--only ours|peer] [--functions rainforest,fanout] [--json PATH]
                                [--bin-dir target/release] [--profile perf|callgrind DIR]
                                [--store moto|dynamodb-local] [--env NAME=VALUE ...] [--evict-binary]

Needs the release bootstraps (`cargo build --release --workspace --bins`) and root (the cgroup).

- **CPU share**: Lambda gives a function CPU in proportion to its memory, one vCPU at 1,769 MB.
  Each memory size gets a cgroup v1 `cpu` group (v2 `cpu.max` where that is what the machine
  has) with a quota of 100 ms × MB / 1769 per 100 ms period. The RIE starts a small wrapper that
  moves itself into the group and then execs the bootstrap, so the bootstrap's whole life (init
  included) runs at the share; the emulator, the TLS terminator and moto run at full CPU, as AWS's
  side does. Lambda is reported to run init at full CPU whatever the memory size (it bills init
  for a custom runtime either way): each function is measured both ways, init at the share (the
  wrapper joins the group before exec) and init at full CPU (a relay in front of the RIE's
  Runtime API moves the process into the group at its first request for an invocation).
- **HTTPS**: a CA made for the run (root → intermediate → server, RSA 2048 like AWS's chains)
  signs a certificate for 127.0.0.1; bench/tls_terminator.py serves it in front of the
  counting proxy and moto, one terminator per service (DynamoDB, SNS) as a region has one
  endpoint each. The peer's botocore trusts the system's bundle plus that root (AWS_CA_BUNDLE),
  as it would load certifi's ~140 roots; ours trust Amazon Trust Services' roots plus the run's
  root through SSL_CERT_FILE, which is what production loads less the one extra certificate
  (--system-bundle: the whole system bundle, what the SDK's default client loads).
- **What is reported**, medians over --runs cold starts with (min–max): init (RIE's `INIT
  REPORT`), the first invocation (`INVOKE RTDONE`), the two together (the cold webhook: what the
  provider waits for, beside the client's round trip), warm REPORT Duration p50/p90 over --warm
  invocations after the cold one (init at the share only: with init at full CPU every Runtime
  API call passes the relay, a Python hop; a new event for Rainforest, the peer and the fan-out, whose
  batch is one record; for the other webhooks the same delivery again, a duplicate, which is
  still one DynamoDB request), the CPU time init and the first invocation took (schedstat), peak
  RSS (VmHWM), and DynamoDB requests per warm invocation.
- **Two warm paces**: the --warm invocations go back to back, as under sustained traffic into one
  environment; a function whose invocation needs more CPU than is left of its quota period then
  waits for the next period, so its p50 depends on how invocations fall across periods (the peer
  at 128 MB: 12 or 80 ms, run to run). The --idle-warm ones each follow 150 ms of idle, so each
  starts with the whole quota: a webhook reaching an environment that is warm but was idle, which
  is how refunds, a few a minute, mostly arrive.
- --evict-binary: drops each of our bootstraps from the page cache before each cold start, so
  that its exec reads the code it runs from the disk (major faults), as a new execution
  environment's does; the peer's interpreter and libraries stay cached.
- --profile perf|callgrind DIR: records each of our cold starts, inside the quota, with `perf
  record` (software clock; `perf report -i`) or callgrind (instructions; `callgrind_annotate`).

A benchmark, not a test: nothing about time is asserted, but an answer other than the expected
one stops the run with a non-zero exit.
"""

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_lambda", ROOT / "bench" / "lambda.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

HarnessError = harness.HarnessError
CPU_MB = 1769  # Lambda: one vCPU at 1,769 MB
PERIOD_US = 100_000
# Longer than a quota period: an invocation after this much idle starts with the whole budget.
IDLE_S = 1.5 * PERIOD_US / 1e6
CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
SYSTEM_BUNDLE_FOR_OURS = False  # --system-bundle
ENV_FOR_OURS = {}  # --env
EVICT_OURS = False  # --evict-binary
INIT_FULL_CPU = ", init at full CPU"
INIT_MODES = {"at-share": [False], "full": [True], "both": [False, True]}
SYSTEM_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]


# --- the CPU share ------------------------------------------------------------------------


class CpuShare:
    """A cgroup holding what is put in it to `memory_mb`'s share of one CPU."""

    def __init__(self, memory_mb):
        self.memory_mb = memory_mb
        self.quota_us = PERIOD_US * memory_mb // CPU_MB
        name = f"refund-relay-bench-{memory_mb}mb-{os.getpid()}"
        if (CGROUP_V1 / "cpu.cfs_quota_us").exists():
            self.path = CGROUP_V1 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        elif (CGROUP_V2 / "cgroup.controllers").exists():
            self.path = CGROUP_V2 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{self.quota_us} {PERIOD_US}")
        else:
            raise HarnessError("no cgroup cpu controller (v1 /sys/fs/cgroup/cpu or v2 cpu.max)")
        self.procs = self.path / "cgroup.procs"

    def throttled_ms(self):
        """CPU time the group's tasks waited for quota, so far (v1: throttled_time ns)."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "throttled_time":
                return int(value) / 1e6
            if key == "throttled_usec":
                return int(value) / 1e3
        return None

    def wrapper(self, bootstrap, directory, profile=None, relay=None):
        """A bootstrap for the RIE that joins this group and then execs the real one (under a
        profiler, when `profile` is `(tool, output file)`). With a `relay` (a RuntimeApiRelay),
        it joins the group only when init ends: init runs at full CPU, as Lambda is reported
        to run it."""
        script = Path(directory) / f"bootstrap-{self.memory_mb}mb-{uuid.uuid4().hex[:8]}"
        run = f'exec "{bootstrap}"'
        if profile and profile[0] == "perf":
            run = f'exec perf record -q -F 20000 -g -o "{profile[1]}" -- "{bootstrap}"'
        elif profile:
            run = f'exec valgrind -q --tool=callgrind --callgrind-out-file="{profile[1]}" "{bootstrap}"'
        join = f"echo $$ > {self.procs} || exit 97"
        if relay:
            join = (f'echo $$ > {relay.pid_file} || exit 97\n'
                    f'export AWS_LAMBDA_RUNTIME_API=127.0.0.1:{relay.port}')
        script.write_text(f"#!/bin/sh\n{join}\n{run}\n")
        script.chmod(0o755)
        return script

    def close(self):
        try:
            self.path.rmdir()
        except OSError:
            pass


class RuntimeApiRelay:
    """Stands between a bootstrap and the RIE's Runtime API. The bootstrap's first request for
    its next invocation is where init ends: the relay moves it into the CPU share then, before
    passing the request on, so that only its invocations run at the share."""

    def __init__(self, share, directory):
        import http.server
        import threading

        self.share, self.upstream, self.moved = share, None, False
        self.pid_file = Path(directory) / f"bootstrap-{uuid.uuid4().hex[:8]}.pid"
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _relay(self):
                if self.path.endswith("/invocation/next") and not relay.moved:
                    relay.share.procs.write_text(relay.pid_file.read_text().strip())
                    relay.moved = True
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(*relay.upstream.split(":"), timeout=900)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    res = conn.getresponse()
                    payload = res.read()
                except (ConnectionError, http.client.HTTPException):
                    # The emulator stopped while the bootstrap waited for its next invocation:
                    # how every cold start here ends.
                    conn.close()
                    return
                self.send_response(res.status)
                for k, v in res.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                conn.close()

            do_GET = do_POST = _relay

        import http.client

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --- HTTPS --------------------------------------------------------------------------------


class Tls:
    """A CA made for the run and the files the two sides need."""

    def __init__(self, directory):
        d = self.dir = Path(directory)

        def openssl(*args):
            subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

        ext = d / "ext.cnf"
        ext.write_text(
            "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
            "[intermediate]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
            "[server]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
        )
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "root.key", "-out", "root.pem",
                "-days", "2", "-subj", "/CN=refund-relay bench root", "-extensions", "ca", "-config", "ext.cnf",
                "-batch")
        for name, issuer, section, cn in (("intermediate", "root", "intermediate", "refund-relay bench intermediate"),
                                          ("server", "intermediate", "server", "localhost")):
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                    "-subj", f"/CN={cn}", "-batch")
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey", f"{issuer}.key",
                    "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "ext.cnf",
                    "-extensions", section)
        self.chain = d / "chain.pem"
        self.chain.write_text((d / "server.pem").read_text() + (d / "intermediate.pem").read_text())
        self.key = d / "server.key"
        system = next((Path(b) for b in SYSTEM_BUNDLES if Path(b).exists()), None)
        self.bundle = d / "bundle.pem"
        self.bundle.write_text((system.read_text() if system else "") + (d / "root.pem").read_text())
        self.bundle_certs = self.bundle.read_text().count("BEGIN CERTIFICATE")
        self.root = d / "root.pem"


def start_terminator(services, tls, upstream_port):
    proc = services._spawn([sys.executable, str(ROOT / "bench" / "tls_terminator.py"), "--cert", str(tls.chain),
                            "--key", str(tls.key), "--upstream", f"127.0.0.1:{upstream_port}"], subprocess.PIPE)
    line = proc.stdout.readline().decode()
    if not line.startswith("listening "):
        raise HarnessError(f"tls_terminator did not start: {line!r}")
    return f"https://localhost:{int(line.split()[1])}"  # a name, so the first request resolves it as in a region


# --- one cold start -----------------------------------------------------------------------


class SecretsManagerSubject(harness.Subject):
    """One of our webhook functions with its secrets named by `<VAR>_ARN`: read from Secrets
    Manager (moto, behind its own TLS terminator) at init."""

    @property
    def label(self):
        return f"{self.name} (ours, Secrets Manager)"


def name_secrets_in_store(env, services, run_id):
    import boto3  # from .venv (moto depends on it)

    sm = boto3.client("secretsmanager", endpoint_url=services.moto, region_name=harness.REGION,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    for var in [k for k in env if k.endswith(("_SECRET", "_TOKEN", "_BASIC_AUTH"))]:
        arn = sm.create_secret(Name=f"bench-{run_id}-{var}", SecretString=env.pop(var))["ARN"]
        env[f"{var}_ARN"] = arn


def https_env(subject, services, secrets, run_id, endpoints, tls):
    env = harness.env_for(subject, services, secrets, run_id)
    del env["AWS_ENDPOINT_URL"]
    # One endpoint per service, as in a region: the fan-out opens two TLS connections, a
    # function whose secret is in Secrets Manager one more at init.
    env["AWS_ENDPOINT_URL_DYNAMODB"], env["AWS_ENDPOINT_URL_SNS"], secrets_manager = endpoints
    if isinstance(subject, SecretsManagerSubject):
        name_secrets_in_store(env, services, run_id)
        env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = secrets_manager
    if subject.side == "peer":
        # botocore reads AWS_CA_BUNDLE (instead of certifi's ~140 roots): the bundle costs what
        # certifi's would.
        env["AWS_CA_BUNDLE"] = str(tls.bundle)
    else:
        # Ours trust Amazon Trust Services' roots, and what SSL_CERT_FILE names: here the run's
        # root alone, or with --system-bundle the system's store too (what the SDK's default
        # client loads).
        env["SSL_CERT_FILE"] = str(tls.bundle if SYSTEM_BUNDLE_FOR_OURS else tls.root)
        env.update(ENV_FOR_OURS)
    return env


def fresh_stream_record():
    """A one-record stream batch of a new event of a new refund: what the fan-out gets when
    webhooks arrive one at a time (the cost model's case)."""
    batch = harness.wide_batch(objects=1)
    image = batch["Records"][0]["dynamodb"]["NewImage"]
    image["pk"]["S"] += uuid.uuid4().hex[:12]  # the object id (and so the event id) is the key's
    return batch


def warm_event(subject, secrets):
    """What each warm invocation gets: a new event for Rainforest, the peer and the fan-out; the
    same delivery again (a duplicate: still one DynamoDB request) for the other webhooks."""
    if subject.name == "rainforest":
        return (lambda: harness.fresh_rainforest_event(secrets["RAINFOREST_WEBHOOK_SECRET"])), "accepted"
    if subject.name == "fanout":
        return fresh_stream_record, "batch"
    event, outcome = harness.first_event(subject, secrets)
    return (lambda: event), "duplicate"


def cpu_ms(pid):
    """CPU time of every live thread of `pid` so far (schedstat: nanoseconds on a CPU)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e6


def evict_from_page_cache(path):
    """Drops a file's pages from the page cache (none is mapped between two cold starts), so that
    the next exec reads what it runs from the disk, as in a new execution environment."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cold_start(subject, share, services, secrets, endpoints, tls, warm, idle_warm, workdir, profile, boost=False):
    run_id = f"{share.memory_mb}-{uuid.uuid4().hex[:8]}"
    env = https_env(subject, services, secrets, run_id, endpoints, tls)
    tool = None
    if profile and subject.side == "ours":
        tool = (profile[0], Path(profile[1]) / f"{subject.name}-{share.memory_mb}mb-{run_id}.{profile[0]}")
    relay = RuntimeApiRelay(share, workdir) if boost else None
    bootstrap = share.wrapper(subject.bootstrap.resolve(), workdir, tool, relay)
    event, outcome = harness.first_event(subject, secrets)
    # A new environment starts with a whole quota period: none of it spent by the run before.
    time.sleep(IDLE_S)
    throttled_before = share.throttled_ms()
    if EVICT_OURS and subject.side == "ours":
        evict_from_page_cache(subject.bootstrap.resolve())
    em = harness.Emulator(bootstrap, env)
    if relay:
        relay.upstream = em.runtime_address
    try:
        r = {}
        answer, r["cold_rtt_ms"], _ = em.invoke(event)
        harness.check_answer(f"{subject.label} cold", answer, outcome)
        r["init_ms"] = em.init_ms()
        r["first_invoke_ms"] = em.invoke_phase_ms(0)
        r["cold_webhook_ms"] = r["init_ms"] + r["first_invoke_ms"]
        r["cold_throttled_ms"] = share.throttled_ms() - throttled_before
        r["cold_cpu_ms"] = cpu_ms(em.bootstrap_pid()) if not tool else None
        stat = Path(f"/proc/{em.bootstrap_pid()}/stat").read_text().rsplit(")", 1)[1].split()
        r["cold_page_faults"], r["cold_major_faults"] = int(stat[7]), int(stat[9])
        make, warm_outcome = warm_event(subject, secrets)
        r["warm_ms"], r["warm_dynamodb"], r["warm_cpu_ms"] = [], [], []
        r["idle_warm_ms"], r["idle_warm_cpu_ms"] = [], []
        for i in range(warm + idle_warm):
            pace = "idle_warm" if i >= warm else "warm"
            if pace == "idle_warm":
                time.sleep(IDLE_S)
            before, cpu_before = services.counts(), cpu_ms(em.bootstrap_pid()) if not tool else 0.0
            answer, _, duration = em.invoke(make())
            harness.check_answer(f"{subject.label} warm #{i + 1}", answer, warm_outcome)
            r[f"{pace}_ms"].append(duration)
            if not tool:
                r[f"{pace}_cpu_ms"].append(cpu_ms(em.bootstrap_pid()) - cpu_before)
            r["warm_dynamodb"].append(harness.dynamodb_total(harness.diff(services.counts(), before)[0]))
        pid = em.bootstrap_pid()
        if tool and tool[0] == "perf":  # perf is the RIE's child; the bootstrap is perf's
            kids = harness.children(pid)
            pid = kids[0] if kids else pid
        r["vmhwm_kib"] = em.vmhwm_kib(pid)
        if tool:  # a profiler writes its file on SIGINT/SIGTERM; the RIE's SIGKILL would lose it
            stop_profiler(em.bootstrap_pid(), signal.SIGINT if tool[0] == "perf" else signal.SIGTERM)
    finally:
        em.close()
        if relay:
            relay.close()
    return r


def stop_profiler(pid, sig, timeout=60.0):
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return
        time.sleep(0.05)


def summarize(runs):
    def spread(key):
        xs = [r[key] for r in runs]
        return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}

    warm = [d for r in runs for d in r["warm_ms"]]
    warm_cpu = [c for r in runs for c in r.get("warm_cpu_ms", [])]
    idle = [d for r in runs for d in r.get("idle_warm_ms", [])]
    return {
        "init_ms": spread("init_ms"),
        "first_invoke_ms": spread("first_invoke_ms"),
        "cold_webhook_ms": spread("cold_webhook_ms"),
        "cold_rtt_ms": spread("cold_rtt_ms"),
        "cold_throttled_ms": spread("cold_throttled_ms"),
        "cold_cpu_ms": spread("cold_cpu_ms") if all(r["cold_cpu_ms"] is not None for r in runs) else None,
        "warm_p50_ms": statistics.median(warm) if warm else None,
        "warm_p90_ms": harness.p90(warm) if warm else None,
        "warm_cpu_p50_ms": statistics.median(warm_cpu) if warm_cpu else None,
        "idle_warm_p50_ms": statistics.median(idle) if idle else None,
        "idle_warm_p90_ms": harness.p90(idle) if idle else None,
        "vmhwm_mib": max(r["vmhwm_kib"] for r in runs) / 1024,
        "warm_dynamodb_per_webhook": statistics.mean(d for r in runs for d in r["warm_dynamodb"])
        if warm or idle else None,
    }


# --- report -------------------------------------------------------------------------------


def cell(s, digits=0):
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def report(results):
    a = results["args"]
    lines = [
        f"Cold starts under the RIE at each memory size's CPU share, over HTTPS; {a['runs']} cold starts per "
        f"row, {a['warm']} warm invocations after each, back to back, then {a.get('idle_warm', 0)} more, each after "
        f"{IDLE_S * 1000:.0f} ms idle; load average at start {results['loadavg'][0]:.2f} on "
        f"{os.cpu_count()} cores; the peer's CA bundle: {results['bundle_certs']} certificates, ours: "
        f"{results['ours_trust']}. Milliseconds, median "
        "(min–max); warm: REPORT Duration over every run's warm invocations, and the CPU time of each "
        "(schedstat, every thread of the function's process).",
        "",
        "| MB (CPU) | function | init | first invocation | **cold webhook** | warm p50 / p90 | warm CPU p50 | "
        "warm after idle p50 / p90 | VmHWM | DynamoDB per warm webhook |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mb, functions in results["memory"].items():
        pct = 100 * int(mb) / CPU_MB
        for label, s in functions.items():
            warm = f"{s['warm_p50_ms']:.1f} / {s['warm_p90_ms']:.1f}" if s["warm_p50_ms"] is not None else "–"
            ddb = f"{s['warm_dynamodb_per_webhook']:g}" if s["warm_dynamodb_per_webhook"] is not None else "–"
            cpu = f"{s['warm_cpu_p50_ms']:.2f}" if s.get("warm_cpu_p50_ms") is not None else "–"
            idle = (f"{s['idle_warm_p50_ms']:.1f} / {s['idle_warm_p90_ms']:.1f}"
                    if s.get("idle_warm_p50_ms") is not None else "–")
            digits = 1 if s["cold_webhook_ms"]["median"] < 100 else 0
            lines.append(f"| {mb} ({pct:.1f} %) | {label} | {cell(s['init_ms'], digits)} | "
                         f"{cell(s['first_invoke_ms'], digits)} | **{cell(s['cold_webhook_ms'], digits)}** | {warm} | {cpu} | "
                         f"{idle} | {s['vmhwm_mib']:.1f} MiB | {ddb} |")
    ratios = []
    for mb, functions in results["memory"].items():
        for init in ("", INIT_FULL_CPU):
            ours, peer = functions.get("rainforest (ours)" + init), functions.get("rainforest (peer)" + init)
            if ours and peer:
                def ratio(key):
                    return f"{peer[key] / ours[key]:.1f}×" if ours.get(key) and peer.get(key) else "–"
                ratios.append(
                    f"| {mb} | {'full CPU' if init else 'the share'} | "
                    f"{peer['cold_webhook_ms']['median'] / ours['cold_webhook_ms']['median']:.1f}× | "
                    f"{ratio('warm_p50_ms')} | {ratio('warm_cpu_p50_ms')} | {ratio('idle_warm_p50_ms')} |")
    if ratios:
        lines += ["", "| MB | init at | cold webhook: peer ÷ ours | warm p50: peer ÷ ours | warm CPU p50: peer ÷ ours "
                  "| warm after idle p50: peer ÷ ours |",
                  "|---|---|---|---|---|---|", *ratios]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory", default="128,256,512", help="memory sizes in MB (default 128,256,512)")
    parser.add_argument("--runs", type=int, default=7, help="cold starts per function and size (default 7)")
    parser.add_argument("--warm", type=int, default=30, help="warm invocations after each cold one (default 30)")
    parser.add_argument("--idle-warm", type=int, default=10,
                        help="then warm invocations each after an idle quota period (default 10)")
    parser.add_argument("--only", choices=["ours", "peer"])
    parser.add_argument("--functions", help="which of ours, comma-separated (default all)")
    parser.add_argument("--bin-dir", type=Path, default=harness.RELEASE, help="where our bootstraps are")
    parser.add_argument("--profile", nargs=2, metavar=("perf|callgrind", "DIR"),
                        help="record each of our cold starts with perf (software clock) or callgrind into DIR")
    parser.add_argument("--init", choices=list(INIT_MODES), default="both",
                        help="init at the CPU share (as the invocations), at full CPU, or both (default)")
    parser.add_argument("--system-bundle", action="store_true",
                        help="give ours the system's certificate store too (as the SDK's default client loads it)")
    parser.add_argument("--secrets-manager", action="store_true",
                        help="each webhook function also with its secrets read from Secrets Manager at init")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for our functions' environment (repeatable), for an A/B of one build")
    parser.add_argument("--evict-binary", action="store_true",
                        help="drop each of our bootstraps from the page cache before each cold start")
    parser.add_argument("--store", choices=["moto", "dynamodb-local"], default="moto",
                        help="what answers DynamoDB (SNS and Secrets Manager are moto's either way)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    global SYSTEM_BUNDLE_FOR_OURS, EVICT_OURS
    SYSTEM_BUNDLE_FOR_OURS = args.system_bundle
    EVICT_OURS = args.evict_binary
    for setting in args.env:
        name, sep, value = setting.partition("=")
        if not sep:
            parser.error(f"--env {setting}: NAME=VALUE")
        ENV_FOR_OURS[name] = value
    if os.geteuid() != 0:
        sys.exit("needs root: the CPU share is a cgroup")

    harness.ensure_test_venv(__file__)
    harness.RIE = next(harness.VENV.glob(harness.RIE_IN_VENV), None)
    if harness.RIE is None:
        sys.exit("no RIE in .venv: reinstall it from scripts/requirements-test.txt")
    subjects = []
    if args.only != "peer":
        for name in args.functions.split(",") if args.functions else harness.functions():
            path = args.bin_dir / name
            if not path.exists():
                sys.exit(f"no {path}: cargo build --release --workspace --bins")
            subjects.append(harness.Subject(name, "ours", path))
            if args.secrets_manager and name != "fanout":
                subjects.append(SecretsManagerSubject(name, "ours", path))
    if args.only != "ours":
        harness.ensure_peer_venv()
        subjects.append(harness.Subject("rainforest", "peer", harness.PEER_DIR / "bootstrap"))
    if args.profile:
        if args.profile[0] not in ("perf", "callgrind"):
            parser.error("--profile perf|callgrind DIR")
        Path(args.profile[1]).mkdir(parents=True, exist_ok=True)

    if args.store == "dynamodb-local":
        harness.ensure_dynamodb_local()
        harness.enter_private_network()
    secrets = harness.dev_secrets()
    sizes = [int(m) for m in args.memory.split(",")]
    results = {"loadavg": os.getloadavg(),
               "args": {"runs": args.runs, "warm": args.warm, "idle_warm": args.idle_warm, "memory": sizes,
                        "store": args.store, "env": ENV_FOR_OURS, "evict_binary": EVICT_OURS},
               "memory": {}, "raw": {}}
    services = harness.Services(args.store)
    shares = []
    workdir = Path(tempfile.mkdtemp(prefix="refund-relay-cold-"))
    try:
        services.start()
        tls = Tls(workdir)
        results["bundle_certs"] = tls.bundle_certs
        results["ours_trust"] = (f"the same {tls.bundle_certs}" if args.system_bundle
                                 else "Amazon Trust Services' 5 roots and the run's root")
        endpoints = [start_terminator(services, tls, services.proxy_port) for _ in ("dynamodb", "sns", "secretsmanager")]
        for mb in sizes:
            share = CpuShare(mb)
            shares.append(share)
            results["memory"][str(mb)], results["raw"][str(mb)] = {}, {}
            for subject, boost in [(s, b) for s in subjects for b in INIT_MODES[args.init]]:
                label = subject.label + (INIT_FULL_CPU if boost else "")
                runs = []
                for run in range(args.runs):
                    # With init at full CPU every Runtime API call passes the relay (a Python hop),
                    # so warm invocations are measured at the share only.
                    runs.append(cold_start(subject, share, services, secrets, endpoints, tls,
                                           0 if boost else args.warm, 0 if boost else args.idle_warm,
                                           workdir, args.profile, boost))
                    r = runs[-1]
                    print(f"  {mb} MB {label} {run + 1}/{args.runs}: init {r['init_ms']:.1f} + first "
                          f"{r['first_invoke_ms']:.1f} = {r['cold_webhook_ms']:.1f} ms (CPU "
                          f"{r['cold_cpu_ms'] or float('nan'):.1f} ms, {r['cold_page_faults']} page faults "
                          f"({r['cold_major_faults']} major), throttled "
                          f"{r['cold_throttled_ms']:.0f} ms), warm p50 "
                          f"{statistics.median(r['warm_ms']) if r['warm_ms'] else float('nan'):.1f} ms",
                          file=sys.stderr, flush=True)
                results["memory"][str(mb)][label] = summarize(runs)
                results["raw"][str(mb)][label] = runs
    except HarnessError as e:
        print(f"\nHARNESS FAILURE: {e}", file=sys.stderr)
        return 1
    finally:
        services.close()
        for share in shares:
            share.close()
        shutil.rmtree(workdir, ignore_errors=True)

    table = report(results)
    results["table"] = table
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
