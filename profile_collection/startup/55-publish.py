"""55-publish: send the documents to a bus, for an analysis on another host.

With XSVS_PUBLISH set, every document of the RunEngine is also published,
for ``xsvs-bluesky listen`` on the analysis host:

XSVS_PUBLISH          zmq://HOST:PORT  input of a bluesky 0MQ proxy (msgpack);
                      nats://HOST:PORT NATS JetStream (bluesky-nats, msgpack)
XSVS_PUBLISH_SUBJECT  NATS subject prefix (default "xsvs"): documents go to
                      <prefix>.<name>; a JetStream stream must hold <prefix>.>
XSVS_LOCAL_ANALYSIS   "0": no analysis in this process (60-xsvs.py), the
                      listener does it; default "1" (both)

The publisher is buffered (a bounded queue and a thread): when the bus is
down the RunEngine waits at most 0.1 s per document, then the document is
dropped and counted (``xsvs_publisher.dropped``); the raw run is still in
Tiled, so ``xsvs-bluesky reanalyze`` can analyse it later.
"""

import atexit
import os

xsvs_publisher = None
_target = os.environ.get("XSVS_PUBLISH", "").strip()
if _target:
    from xsvs_bluesky.listen import nats_publisher, zmq_publisher

    try:
        if _target.startswith("zmq://"):
            xsvs_publisher = zmq_publisher(_target.removeprefix("zmq://"))
        elif _target.startswith(("nats://", "tls://")):
            xsvs_publisher = nats_publisher(
                _target, os.environ.get("XSVS_PUBLISH_SUBJECT", "xsvs")
            )
        else:
            print(f"xsvs profile: XSVS_PUBLISH={_target!r}: give zmq://HOST:PORT "
                  "or nats://HOST:PORT; nothing is published")
    except Exception as err:  # a bus that is down must not stop the session
        print(f"xsvs profile: cannot publish to {_target} ({err}); nothing is "
              "published")
    if xsvs_publisher is not None:
        RE.subscribe(xsvs_publisher)
        atexit.register(xsvs_publisher.close)
        print(f"xsvs profile: documents published to {_target}")
