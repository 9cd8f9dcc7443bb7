"""Continues the relay's traces, as a consumer outside Rust would: reads a Kafka topic (over
confluent-kafka) and a file of webhook requests' headers, extracts each one's trace context with
OpenTelemetry's official W3C propagator, starts a consumer span in it with the OpenTelemetry SDK,
and prints one JSON line per message: which record or event it carried, and the span's trace id
and parent span id. tests/it/traces.rs runs it.

Usage: python3 trace_consumer.py BROKER TOPIC COUNT TIMEOUT_SECONDS WEBHOOK_HEADERS_FILE
(the file: one JSON object of a webhook request's headers per line)
"""

import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATOR = TraceContextTextMapPropagator()
TRACER = TracerProvider().get_tracer("trace-consumer")


def continued(source: str, carried: str, headers: dict) -> dict:
    """A consumer span in the trace the headers carry, and what it is under."""
    context = PROPAGATOR.extract(carrier=headers)
    with TRACER.start_as_current_span(
        "consume", context=context, kind=trace.SpanKind.CONSUMER
    ) as span:
        own = span.get_span_context()
        parent = span.parent
        return {
            "source": source,
            "carried": carried,
            "trace_id": format(own.trace_id, "032x"),
            "parent_span_id": format(parent.span_id, "016x") if parent else None,
            "sampled": own.trace_flags.sampled,
        }


def main() -> None:
    broker, topic, count, timeout, webhooks = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        float(sys.argv[4]),
        sys.argv[5],
    )
    consumer = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": f"trace-check-{time.time_ns()}",
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            sys.exit(f"consumer error on {topic}: {message.error()}")
        headers = {k: v.decode() for k, v in (message.headers() or [])}
        print(json.dumps(continued("kafka", headers["mxc-record-id"], headers)))
        seen += 1
    consumer.close()
    with open(webhooks, encoding="utf-8") as lines:
        for line in lines:
            headers = json.loads(line)
            print(json.dumps(continued("webhook", headers["webhook-id"], headers)))


if __name__ == "__main__":
    main()
