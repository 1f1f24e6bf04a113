"""The peer: the Rainforest receiver a team would write with off-the-shelf Python parts.

AWS Lambda Powertools' idempotency utility makes the store exactly-once (its DynamoDB
persistence layer is the only thing written: the idempotency record keeps the event), and the
`standardwebhooks` library checks the signature. Answers are API Gateway v2 proxy responses:
200 accepted / duplicate (or ignored: not a refund event), 400 bad body, 401 bad signature.

Written the way such code is written for real: clients and configuration built once at import
(so they live across warm invocations), verification before anything is stored (so a forged
request cannot claim an idempotency key), the key taken from the event's own identity.
"""

import base64
import json
import os

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def _mark_duplicate(response, record):
    """Powertools calls this when it answers from the store instead of running the function."""
    return {**response, "status": "duplicate"}


# Built at import, like real code: one boto3 client, one verifier per execution environment.
persistence = DynamoDBPersistenceLayer(table_name=os.environ["IDEMPOTENCY_TABLE"])
config = IdempotencyConfig(
    # The provider's identity of the event, as refund-relay keys it (a resend with a new
    # delivery id is still the same event): refund id + event type + status.
    event_key_jmespath="[data.refund_id, event_type, data.status]",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=90 * 24 * 3600,  # refund-relay's RETENTION_DAYS default
    response_hook=_mark_duplicate,
)
webhook = Webhook(os.environ["RAINFOREST_WEBHOOK_SECRET"])


def _respond(status, body):
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


@idempotent_function(data_keyword_argument="event", persistence_store=persistence, config=config)
def store(event):
    """Runs once per event; what it returns is what Powertools stores (and replays to duplicates)."""
    event_id = f"{event['data']['refund_id']}:{event['event_type']}:{event['data']['status']}"
    return {"status": "accepted", "event_id": event_id, "event": event}


def lambda_handler(event, context):
    config.register_lambda_context(context)
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body).decode()
        except ValueError:
            return _respond(400, {"error": "invalid_payload"})
    # Rainforest sends Svix's `svix-*` names; the library reads the Standard Webhooks
    # `webhook-*` names of the same scheme.
    headers = {}
    for name, value in (event.get("headers") or {}).items():
        name = name.lower()
        headers["webhook-" + name[5:] if name.startswith("svix-") else name] = value
    try:
        webhook.verify(body, headers, json_parse=False)
    except (WebhookVerificationError, ValueError):  # ValueError: malformed signature header
        return _respond(401, {"error": "unauthorized"})

    try:
        payload = json.loads(body)
        if not payload["event_type"].startswith("refund."):
            # Verified but not ours to handle: 200, so the provider stops retrying it.
            return _respond(200, {"status": "ignored"})
        if not (payload["data"]["refund_id"] and payload["data"]["status"]):
            raise ValueError("a refund without its id or status")
    except (ValueError, KeyError, TypeError, AttributeError):
        return _respond(400, {"error": "invalid_payload"})

    result = store(event=payload)
    return _respond(200, {"status": result["status"], "event_id": result["event_id"]})
