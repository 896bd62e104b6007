"""The brainstream bus: ZeroMQ PUB/SUB through a broker, msgpack headers, zero-copy arrays
(docs/architecture.md §3).

Start from Python::

    from brainstream.realtime.bus import Broker, Publisher, Subscriber

    with Broker():                                    # tcp://127.0.0.1:5701 (XSUB) -> :5702 (XPUB)
        pub = Publisher(name="decoder")
        sub = Subscriber(topics=("embedding.",))
        pub.publish("embedding.sub-01", [emb], t_sample=t, space="demo", event=None, image_id=None)
        msg = sub.recv(timeout=1.0)                   # BusMessage | None
"""

from brainstream.realtime.bus._socket import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PUB_ENDPOINT,
    DEFAULT_SUB_ENDPOINT,
)
from brainstream.realtime.bus.broker import Broker
from brainstream.realtime.bus.message import BusMessage, MalformedMessageError, decode, encode
from brainstream.realtime.bus.publisher import Publisher
from brainstream.realtime.bus.security import CurveKeys, InsecureBindError, KeysError, generate_keys
from brainstream.realtime.bus.subscriber import Subscriber

# requests to the decoder (the display's bad-sensor key): {action: "mark_bad", channels: [names]}
DECODER_CONTROL_TOPIC = "control.decoder"

__all__ = [
    "DECODER_CONTROL_TOPIC",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PUB_ENDPOINT",
    "DEFAULT_SUB_ENDPOINT",
    "Broker",
    "BusMessage",
    "CurveKeys",
    "InsecureBindError",
    "KeysError",
    "MalformedMessageError",
    "Publisher",
    "Subscriber",
    "decode",
    "encode",
    "generate_keys",
]
