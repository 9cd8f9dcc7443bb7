"""Reads a Kafka topic as CloudEvents, with the CloudEvents SDK's Kafka binding (binary content
mode) over confluent-kafka, and prints one JSON line per event: its attributes and the ids in
its data. tests/it/contract.rs runs it against the relay's messages; docs/consuming/kafka.md's Python
consumer is the same loop.

Usage: python3 cloudevents_consumer.py BROKER TOPIC COUNT TIMEOUT_SECONDS
"""

import json
import sys
import time

from cloudevents.kafka import KafkaMessage, from_binary
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def main() -> None:
    broker, topic, count, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    consumer = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": f"cloudevents-check-{time.time_ns()}",
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
        event = from_binary(
            KafkaMessage(
                headers=dict(message.headers() or []),
                key=message.key(),
                value=message.value(),
            )
        )
        envelope = event.get_data()
        print(
            json.dumps(
                {
                    "specversion": event["specversion"],
                    "id": event["id"],
                    "type": event["type"],
                    "source": event["source"],
                    "time": event.get("time"),
                    "subject": event.get("subject"),
                    "dataschema": event.get("dataschema"),
                    "datacontenttype": event.get("datacontenttype"),
                    "partitionkey": (event.get("partitionkey") or b"").decode(),
                    "envelope_id": envelope["id"],
                    "record_id": envelope["data"]["id"],
                }
            ),
            flush=True,
        )
        seen += 1
    consumer.close()


if __name__ == "__main__":
    main()
