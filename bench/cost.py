#!/usr/bin/env python3
"""What a million refund webhooks cost in AWS (us-east-1), from the figures the benchmarks measured:

    python3 bench/cost.py [--cold-start target/bench/cold-start.json]
                          [--write-units target/bench/lambda-dynamodb-local.json]
                          [--cold-rate 0.01]

Per webhook: one HTTP API request; one webhook invocation (billed for its duration, and on a cold
start for init plus the first invocation: a custom runtime's init is billed); one fan-out
invocation (a one-record batch: the worst case, when webhooks arrive one at a time); the DynamoDB
write units the webhook and the fan-out consume (DynamoDB Local's figures); the SNS publishes the
fan-out makes per event. Lambda's duration is the Rainforest function's and the fan-out's, measured
at each memory size's CPU share (bench/cold_start.py), billed per started millisecond at the arm64
price. Free tiers are left out, and so are what subscribers' deliveries cost (e-mail, SMS), which
SNS bills per delivery and depend on what each deployment subscribes.
"""

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# us-east-1 list prices, USD, as the pages below publish them (read 2026-12-01; see bench/README.md).
PRICES = {
    "http_api_request": 1.00 / 1e6,  # first 300 million a month: aws.amazon.com/api-gateway/pricing/
    "lambda_request": 0.20 / 1e6,  # aws.amazon.com/lambda/pricing/
    "lambda_arm64_gb_second": 0.0000133334,  # first 7.5 billion GB-s a month, arm64
    "dynamodb_write_request_unit": 0.625 / 1e6,  # on-demand: aws.amazon.com/dynamodb/pricing/on-demand/
    "sns_publish": 0.50 / 1e6,  # standard topics, per 64 KB chunk: aws.amazon.com/sns/pricing/
}


def billed_ms(ms):
    return math.ceil(ms)


def lambda_cost(memory_mb, warm_ms, cold_ms, cold_rate):
    """Duration cost of one invocation, averaged over warm and cold ones."""
    gb = memory_mb / 1024
    ms = (1 - cold_rate) * billed_ms(warm_ms) + cold_rate * billed_ms(cold_ms)
    return gb * ms / 1000 * PRICES["lambda_arm64_gb_second"]


def write_units(path):
    """Write units per webhook (the webhook's writes) and per event (the fan-out's), and SNS
    publishes per event, from bench/lambda.py --store dynamodb-local's results."""
    data = json.loads(Path(path).read_text())["functions"]
    webhook = data["rainforest (ours)"]["summary"]["write_units_new"]
    fanout = data["fanout (ours)"]["summary"]
    records = 5  # events/fanout-stream.json's batch: five new events
    publishes = sum(v for k, v in fanout["requests_new"].items() if not k.startswith("DynamoDB"))
    return webhook, fanout["write_units_new"] / records, publishes / records


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cold-start", type=Path, default=ROOT / "target" / "bench" / "cold-start.json")
    ap.add_argument("--write-units", type=Path, default=ROOT / "target" / "bench" / "lambda-dynamodb-local.json")
    ap.add_argument("--cold-rate", type=float, default=0.01,
                    help="share of webhook invocations that start cold (default 0.01: AWS reports under 1 %%)")
    args = ap.parse_args()

    cold = json.loads(args.cold_start.read_text())["memory"]
    webhook_wru, fanout_wru, publishes = write_units(args.write_units)
    rows = [
        f"Per million webhooks, USD, us-east-1 list prices; {args.cold_rate:.0%} of webhook invocations cold; "
        f"{webhook_wru:g} write units per webhook and {fanout_wru:g} per event in the fan-out, {publishes:g} SNS "
        "publishes per event (DynamoDB Local and moto, bench/lambda.py); Lambda durations measured at each size's "
        "CPU share (bench/cold_start.py: Rainforest's warm p50 and cold webhook, the fan-out's warm p50 on a "
        "one-record batch and its cold start).",
        "",
        "| MemorySize | HTTP API | Lambda requests | webhook duration | fan-out duration | DynamoDB writes | "
        "SNS publishes | **total** |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fixed = {
        "api": PRICES["http_api_request"],
        "requests": 2 * PRICES["lambda_request"],
        "dynamodb": (webhook_wru + fanout_wru) * PRICES["dynamodb_write_request_unit"],
        "sns": publishes * PRICES["sns_publish"],
    }
    for mb, functions in cold.items():
        hook, fan = functions.get("rainforest (ours)"), functions.get("fanout (ours)")
        if not hook or not fan:
            continue
        webhook = lambda_cost(int(mb), hook["warm_p50_ms"], hook["cold_webhook_ms"]["median"], args.cold_rate)
        fanout = lambda_cost(int(mb), fan["warm_p50_ms"], fan["cold_webhook_ms"]["median"], args.cold_rate)
        total = sum(fixed.values()) + webhook + fanout
        m = 1e6
        rows.append(f"| {mb} MB | {fixed['api'] * m:.2f} | {fixed['requests'] * m:.2f} | {webhook * m:.3f} | "
                    f"{fanout * m:.3f} | {fixed['dynamodb'] * m:.2f} | {fixed['sns'] * m:.2f} | **{total * m:.2f}** |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
