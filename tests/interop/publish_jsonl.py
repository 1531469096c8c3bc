#!/usr/bin/env python3
"""Publishes suitcase-jsonl files through bluesky's own Publisher (JSON serializer), document by
document, to a 0MQ proxy: for tests that need documents no RunEngine would write (bad ones,
runs with many frames).

usage: publish_jsonl.py PROXY_IN_PORT FILE...
Prints "published N documents".
"""
import json
import sys
import time

from bluesky.callbacks.zmq import Publisher


def main():
    port, files = sys.argv[1], sys.argv[2:]
    publisher = Publisher(f"127.0.0.1:{port}", serializer=lambda doc: json.dumps(doc).encode())
    time.sleep(1.0)  # 0MQ's slow joiner: the proxy must have subscribed first
    n = 0
    for path in files:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                name, doc = json.loads(line)
                publisher(name, doc)
                n += 1
                # Below the proxy's high-water mark even for a slow subscriber.
                if n % 100 == 0:
                    time.sleep(0.05)
    time.sleep(0.5)
    print(f"published {n} documents", flush=True)


if __name__ == "__main__":
    main()
