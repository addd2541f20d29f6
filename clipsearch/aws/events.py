"""SQS messages carrying S3 event notifications, parsed without trusting them.

The ingest queue receives what S3 sends (and whatever else someone sends to
it by hand). Every SQS record becomes a `Message`:

- S3 notifications (`{"Records": [{"eventSource": "aws:s3", ...}]}`), also
  when wrapped in an SNS envelope or sent as an EventBridge "Object Created"
  / "Object Deleted" event: one `ObjectEvent` per record, with the object key
  URL-decoded (S3 encodes keys in notifications, `+` for a space);
- `s3:TestEvent`, which S3 sends once when the notification is configured:
  recognised and acknowledged, since there is nothing to do;
- anything else (not JSON, JSON of another shape, an S3 record without a
  key, JSON nested too deep or with non-finite numbers, an object key that is
  not well-formed Unicode): a message with a `problem`. The handler reports it as a failed item on
  every delivery so it reaches the dead-letter queue, where a person can see
  it, instead of being dropped silently.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from clipsearch import strict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectEvent:
    """One S3 object that changed: what the ingest reconciles."""

    bucket: str
    key: str
    event_name: str
    version_id: str | None = None
    sequencer: str | None = None

    @property
    def removed(self) -> bool:
        return self.event_name.startswith(("ObjectRemoved", "LifecycleExpiration"))


@dataclass(frozen=True)
class Message:
    """One SQS record, parsed."""

    message_id: str
    receive_count: int = 1
    objects: tuple[ObjectEvent, ...] = field(default_factory=tuple)
    test_event: bool = False
    problem: str | None = None


def parse_sqs_event(event: Any) -> tuple[list[Message], list[str]]:
    """All records of a Lambda SQS event; the second list holds batch-level problems.

    A record without a messageId cannot be reported back in
    `batchItemFailures`, so it is listed as a batch-level problem (the caller
    then fails the whole batch, which is the only way to keep it).
    """
    if not isinstance(event, Mapping) or not isinstance(event.get("Records"), list):
        return [], ["the event has no Records list; is this an SQS event?"]
    messages: list[Message] = []
    problems: list[str] = []
    for position, record in enumerate(event["Records"]):
        if not isinstance(record, Mapping) or not isinstance(record.get("messageId"), str):
            problems.append(f"record {position} has no messageId")
            continue
        try:
            messages.append(parse_sqs_record(record))
        except Exception as exc:  # one odd message fails alone, never the batch
            log.warning("SQS record %d could not be parsed", position, exc_info=True)
            messages.append(Message(str(record["messageId"]),
                                    problem=f"the message could not be parsed "
                                            f"({type(exc).__name__})"))
    return messages, problems


def parse_sqs_record(record: Mapping[str, Any]) -> Message:
    message_id = str(record["messageId"])
    attributes = record.get("attributes") or {}
    try:
        receive_count = int(attributes.get("ApproximateReceiveCount") or 1)
    except (TypeError, ValueError):
        receive_count = 1
    body = record.get("body")
    if not isinstance(body, str) or not body.strip():
        return Message(message_id, receive_count, problem="the message body is empty")
    try:
        payload = strict.loads(body)
    except json.JSONDecodeError as exc:
        return Message(message_id, receive_count,
                       problem=f"the message body is not JSON we accept ({exc.msg} at "
                               f"{exc.pos})")
    return _parse_payload(message_id, receive_count, payload, depth=0)


def _parse_payload(message_id: str, receive_count: int, payload: Any, depth: int) -> Message:
    def problem(text: str) -> Message:
        return Message(message_id, receive_count, problem=text)

    if not isinstance(payload, Mapping):
        return problem(f"the message body is JSON {type(payload).__name__}, not an S3 event")
    if payload.get("Event") == "s3:TestEvent":
        return Message(message_id, receive_count, test_event=True)
    if payload.get("Type") == "Notification" and isinstance(payload.get("Message"), str):
        if depth > 0:
            return problem("nested SNS envelopes are not S3 events")
        try:
            inner = strict.loads(payload["Message"])
        except json.JSONDecodeError as exc:
            return problem(f"the SNS notification's Message is not JSON we accept ({exc.msg})")
        return _parse_payload(message_id, receive_count, inner, depth + 1)
    if payload.get("source") == "aws.s3" and isinstance(payload.get("detail"), Mapping):
        return _eventbridge(message_id, receive_count, payload)
    records = payload.get("Records")
    if not isinstance(records, list) or not records:
        keys = ", ".join(sorted(str(k) for k in payload)[:5]) or "none"
        return problem(f"not an S3 event notification (top-level keys: {keys})")
    objects = []
    for number, record in enumerate(records):
        try:
            objects.append(_s3_record(record))
        except (KeyError, TypeError, ValueError) as exc:
            return problem(f"S3 record {number} is malformed: {exc}")
    return Message(message_id, receive_count, objects=tuple(objects))


def _s3_record(record: Any) -> ObjectEvent:
    if not isinstance(record, Mapping):
        raise TypeError("a record must be an object")
    source = record.get("eventSource")
    if source != "aws:s3":
        raise ValueError(f"eventSource is {source!r}, not 'aws:s3'")
    s3 = record["s3"]
    key = s3["object"]["key"]
    bucket = s3["bucket"]["name"]
    name = record["eventName"]
    if not all(isinstance(v, str) and v for v in (key, bucket, name)):
        raise ValueError("bucket name, object key and eventName must be non-empty strings")
    return ObjectEvent(
        bucket=bucket,
        key=_object_key(key),
        event_name=name,
        version_id=s3["object"].get("versionId"),
        sequencer=s3["object"].get("sequencer"),
    )


def _object_key(raw: str) -> str:
    """The URL-decoded key; one that does not decode to well-formed UTF-8 is refused."""
    try:
        key = unquote_plus(raw, errors="strict")
    except UnicodeDecodeError:
        raise ValueError("the object key is not URL-encoded UTF-8") from None
    if not strict.is_well_formed(key) or "\x00" in key:
        raise ValueError("the object key is not well-formed text")
    return key


def _eventbridge(message_id: str, receive_count: int, payload: Mapping[str, Any]) -> Message:
    detail = payload["detail"]
    try:
        bucket = detail["bucket"]["name"]
        key = detail["object"]["key"]
    except (KeyError, TypeError):
        return Message(message_id, receive_count,
                       problem="EventBridge S3 event without bucket name or object key")
    kind = str(payload.get("detail-type") or "")
    name = "ObjectRemoved:Delete" if "Deleted" in kind else "ObjectCreated:Put"
    if not isinstance(key, str) or not key or not strict.is_well_formed(key):
        return Message(message_id, receive_count,
                       problem="EventBridge S3 event whose object key is not well-formed text")
    return Message(message_id, receive_count, objects=(
        ObjectEvent(bucket=str(bucket), key=key, event_name=name,
                    version_id=detail["object"].get("version-id"),
                    sequencer=detail["object"].get("sequencer")),))
